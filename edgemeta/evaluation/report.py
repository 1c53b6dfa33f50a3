"""The Markdown table and report, the CER-against-k plot, and the files ``edgemeta eval`` writes them to."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from edgemeta.adaptation_methods import ADAPTATION_METHODS, NO_ADAPTATION
from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.evaluation.adaptation_runs import Enrolled, Record
from edgemeta.evaluation.datasets import SCORED_CLIPS
from edgemeta.evaluation.summary import WORSE_MARGIN, Row, baseline_model, summarize

Column = tuple[str, Callable[[Row], str]]


def cell(value: float | None, digits: int = 3) -> str:
    """A table cell: the value rounded, or a dash for none."""
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[Row], guard: bool, extra: Sequence[Column] = ()) -> str:
    """The table: one line per dataset × model/method × k; ``extra`` columns (header, cell of a row) at the end."""
    header = ["dataset", "model", "method", "k", "speakers", "CER mean", "CER std", "CER min–max", "WER mean", "worse"]
    header += ["guard accepted"] if guard else []
    header += [name for name, _ in extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r.dataset, r.model, r.method, str(r.k), str(r.speakers), cell(r.cer_mean), cell(r.cer_std),
                 f"{r.cer_min:.3f}–{r.cer_max:.3f}", cell(r.wer_mean), cell(r.worse, 2)]
        cells += [cell(r.guard_acceptance, 2)] if guard else []
        cells += [value(r) for _, value in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_cer(rows: list[Row], png: Path) -> None:
    """CER (mean ± std across speakers) against k, one panel per dataset and one colour per model.

    A model's adaptive methods are solid lines (controls dash-dotted), its k=0 (``none``) a dashed horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    colours = {model: f"C{i % 10}" for i, model in enumerate(dict.fromkeys(r.model for r in rows))}
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r.dataset == dataset]
        for model, method in dict.fromkeys((r.model, r.method) for r in mine):
            line = [r for r in mine if (r.model, r.method) == (model, method)]
            if method == NO_ADAPTATION.name:
                axis.axhline(line[0].cer_mean, linestyle="--", linewidth=1, color=colours[model], label=f"{method} ({model}, k=0)")
                continue
            axis.errorbar([r.k for r in line], [r.cer_mean for r in line], yerr=[r.cer_std for r in line], marker="o", capsize=3,
                          color=colours[model], linestyle="-." if method in ADAPTATION_METHODS and ADAPTATION_METHODS[method].control else "-",
                          label=method if model == method else f"{method} ({model})")
        axis.set_xticks(sorted({r.k for r in mine}))
        axis.set_xlabel("k (adaptation clips)")
        axis.set_ylabel("CER (mean over speakers)")
        axis.set_title(dataset)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)


def guard_rules(enrolled: list[Enrolled]) -> dict[int, list[str]]:
    """The guard's rules used, by k."""
    rules: dict[int, set[str]] = defaultdict(set)
    for e in enrolled:
        if e.guard_rule:
            rules[e.k].add(e.guard_rule)
    return {k: sorted(v) for k, v in sorted(rules.items())}


def report_markdown(rows: list[Row], guard: bool, seeds: int, rules: dict[int, list[str]], notes: list[str], baseline: str) -> str:
    """The Markdown report: the table, how to read it and the notes."""
    text = [
        "# edgemeta eval", "", markdown_table(rows, guard), "",
        f"Per speaker: CER = Σ edits / Σ reference characters over its fixed scored clips (at most {SCORED_CLIPS}, "
        f"identical for every k, method and seed); mean over {seeds} seed(s) of the adaptation draw, then mean, std and "
        f"min–max across speakers. worse: fraction of speakers whose seed-mean CER exceeds one baseline for every "
        f"method, {baseline}'s k=0 CER, + {WORSE_MARGIN}.",
    ]
    if guard:
        text.append("guard accepted: fraction of bundle enrollments the device's guard accepted (— for checkpoints: no guard). "
                    "Guard rules used: " + "; ".join(r for by_k in rules.values() for r in by_k) + ".")
    text += [""] + [f"- {note}" for note in notes]
    return "\n".join(text).rstrip() + "\n"


def write_outputs(out: Path, records: list[Record], enrolled: list[Enrolled], facts: dict[str, Any], notes: list[str],
                  provenance: Provenance) -> list[Row]:
    """Write OUT (JSON Lines), and beside it .md (report), .png (plot) and .summary.json (``facts``, rows, stamp); the rows.

    ``facts`` must hold ``guard`` and ``seeds``; "worse" is measured against :func:`baseline_model`'s k=0.
    """
    baseline = baseline_model(records)
    rows = summarize(records, enrolled, baseline)
    rules = guard_rules(enrolled)
    md, png, summary = (out.with_suffix(suffix) for suffix in (".md", ".png", ".summary.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records), encoding="utf-8")
    md.write_text(report_markdown(rows, facts["guard"], facts["seeds"], rules, notes, baseline), encoding="utf-8")
    plot_cer(rows, png)
    write_json(summary, {
        **facts, "worse_margin": WORSE_MARGIN, "worse_baseline": f"{baseline} k=0", "guard_rules": rules,
        "rows": [asdict(r) for r in rows], "enrollments": [asdict(e) for e in enrolled], "notes": notes,
    }, provenance)
    return rows
