"""``edgemeta eval``: the command line, from arguments to the JSON Lines, Markdown, PNG and summary files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from edgemeta.adaptation_methods import ADAPTATION_METHODS
from edgemeta.evaluation import EvalError
from edgemeta.evaluation.adaptation_runs import evaluate, protocol_notes
from edgemeta.evaluation.arguments import comma_list, k_list, positive_int
from edgemeta.evaluation.datasets import SPLITS, load_dataset
from edgemeta.evaluation.method_plans import MODEL_NAMES, plan_methods
from edgemeta.evaluation.models import load_model
from edgemeta.evaluation.report import guard_rules, markdown_table, plot_cer, report_markdown
from edgemeta.evaluation.summary import WORSE_MARGIN, baseline_model, summarize
from edgemeta.runtime.bundle import BUILTIN_BUNDLE

OPT_IN = [name for name, m in ADAPTATION_METHODS.items() if not m.evaluated_by_default]


def _model_and_path(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    if name not in MODEL_NAMES:
        raise argparse.ArgumentTypeError(f"model name must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return name, Path(path)


EXAMPLES = """\
examples:
  # the built-in bundle (as meta-sgd) on unseen voices, k = 0, 1, 5, 10, 3 seeds
  edgemeta eval --manifest data/flite/manifest.jsonl --json eval/flite.jsonl
  # baselines and Meta-SGD from checkpoints, on held-out real speakers and spoken digits (k up to 20 there)
  edgemeta eval --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
      --manifest ../shared/data/fsdd-dev/manifest.jsonl --k 0,1,5,10,20 \\
      --model pretrained=runs/pretrain/last.pt --model finetune=runs/finetune/last.pt \\
      --model meta-sgd=runs/meta-sgd/last.pt --model maml=runs/maml/last.pt --json eval/real.jsonl
  # the two controls: plain CTC for the same time, and the meta-trained init with a scalar rate
  edgemeta eval --manifest data/flite/manifest.jsonl --model finetune=runs/finetune/last.pt \\
      --model ctc-control=runs/ctc-control/last.pt --model meta-sgd=runs/meta-sgd/last.pt \\
      --methods none,finetune,ctc-control,meta-sgd,meta-sgd-scalar --json eval/controls.jsonl
  # a bundle as the device enrolls: clip checks and guard
  edgemeta eval --manifest data/flite/manifest.jsonl --model meta-sgd=bundles/mine --guard --json eval/guard.jsonl

writes OUT (JSON Lines), OUT with .md (the table), .png (CER against k) and .summary.json
(clip lists, rates, guard decisions, notes, timings). speechocean762-train is scored on the committed
split's test speakers (--split dev: its dev speakers, for choices). "worse" compares every method with one
baseline: the pretrained model's k=0 (without --model pretrained=...: the first model's).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="k-shot adaptation per speaker: CER/WER for every model and method, table and plot",
        description="Measure k-shot speaker adaptation: per speaker a fixed scored set, adaptation clips drawn per seed; "
        "CER/WER per dataset, model, method, k, speaker and seed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--model", type=_model_and_path, action="append", default=[], metavar="NAME=PATH",
                        help=f"NAME one of {', '.join(MODEL_NAMES)}; PATH a checkpoint (.pt) or a bundle "
                             "(directory or archive); repeatable (default: the built-in bundle as meta-sgd)")
    parser.add_argument("--methods", type=comma_list, default=None,
                        help=f"comma-separated, from {', '.join(ADAPTATION_METHODS)} (default: every method the models "
                             f"allow, {', '.join(OPT_IN)} excepted); none is always reported")
    parser.add_argument("--k", type=k_list, default=[0, 1, 5, 10], help="adaptation clips, comma-separated (default: 0,1,5,10)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="draws of adaptation clips per speaker (default: 3)")
    parser.add_argument("--guard", action="store_true", help="bundles: clip checks and the guard, as the device enrolls")
    parser.add_argument("--greedy", action="store_true",
                        help="bundles: best-path decoding instead of their language model, as checkpoints decode (compares acoustic models)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="speechocean762-train speakers to score: test (reported figures, the default) or dev "
                             "(where choices are made); other manifests are scored whole")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch and onnxruntime CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON Lines output, one record per run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``edgemeta eval`` from parsed arguments."""
    try:
        return _run(args)
    except EvalError as error:
        print(f"edgemeta eval: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.json.suffix in (".md", ".png"):
        raise EvalError(f"--json {args.json}: the table and plot are written beside OUT with .md and .png; give OUT another suffix")
    pairs = args.model or [("meta-sgd", BUILTIN_BUNDLE)]
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EvalError(f"--model {duplicated[0]} is given more than once")
    models = {name: load_model(name, path, args.threads, args.guard, args.greedy) for name, path in pairs}
    for name, model in models.items():
        expected = {name, ADAPTATION_METHODS[name].adapts_as} if name in ADAPTATION_METHODS else {name}
        if model.method is not None and model.method not in expected:
            print(f"note: --model {name}: {model.path} was trained as {model.method!r}", file=sys.stderr)
    if args.guard and any(m.kind == "checkpoint" for m in models.values()):
        print("note: --guard applies to bundles; checkpoints are adapted raw (the guard is the device's)", file=sys.stderr)
    plans = plan_methods(models, args.methods)
    folders = [m.resolve().parent.name for m in args.manifest]
    if len(set(folders)) < len(folders):
        raise EvalError(f"two manifests share the folder name {sorted(f for f in folders if folders.count(f) > 1)[0]!r}, "
                        "which names their dataset")
    datasets = [load_dataset(m, args.split) for m in args.manifest]
    notes = [note for d in datasets for note in d.notes] + protocol_notes(datasets, models, args.k)
    for note in notes:
        print(note, file=sys.stderr)
    loaded = time.perf_counter()
    records, enrolled = evaluate(datasets, models, plans, args.k, args.seeds)

    baseline = baseline_model(records)
    rows = summarize(records, enrolled, baseline)
    rules = guard_rules(enrolled)
    report = report_markdown(rows, args.guard, args.seeds, rules, notes, baseline)
    md, png, summary = (args.json.with_suffix(suffix) for suffix in (".md", ".png", ".summary.json"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records), encoding="utf-8")
    md.write_text(report, encoding="utf-8")
    plot_cer(rows, png)
    summary.write_text(json.dumps({
        "models": {n: {"path": str(m.path), "kind": m.kind, "trained_as": m.method} for n, m in models.items()},
        "methods": [asdict(p) for p in plans],
        "k": args.k, "seeds": args.seeds, "guard": args.guard, "split": args.split,
        "worse_margin": WORSE_MARGIN, "worse_baseline": f"{baseline} k=0",
        "guard_rules": rules,
        "datasets": {d.name: {
            "manifest": str(d.manifest),
            "speakers": {s.speaker: {
                "clips": len(s.scored) + len(s.pool),
                "scored": [s.names[u.source] for u in s.scored],
                "adaptation": {seed: [s.names[u.source] for u in s.support(seed, max(args.k))] for seed in range(args.seeds)},
            } for s in d.speakers},
        } for d in datasets},
        "rows": [asdict(r) for r in rows],
        "enrollments": [asdict(e) for e in enrolled],
        "notes": notes,
        "seconds": {"loading": round(loaded - started, 2), "evaluation": round(time.perf_counter() - loaded, 2)},
    }, indent=1), encoding="utf-8")
    print(markdown_table(rows, args.guard))
    print(f"wrote {args.json}, {md}, {png}, {summary} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
