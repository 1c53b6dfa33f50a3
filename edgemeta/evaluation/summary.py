"""Records summarised across speakers: one row per dataset, model, method and k."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from edgemeta.adaptation_methods import NO_ADAPTATION
from edgemeta.evaluation.adaptation_runs import Enrolled, Record
WORSE_MARGIN = 0.01  # "worse": CER after > CER before + this (DESIGN's evaluation protocol)
BASELINE_MODEL = "pretrained"


@dataclass
class Row:
    """One line of the table: a dataset, model, method and k over speakers (seed-mean per speaker)."""

    dataset: str
    model: str
    method: str
    k: int
    speakers: int
    cer_mean: float
    cer_std: float
    cer_min: float
    cer_max: float
    wer_mean: float
    worse: float | None
    worse_draws: float | None
    guard_acceptance: float | None
    adapted: float | None
    seconds_per_adaptation: float | None


def baseline_model(records: list[Record]) -> str:
    """The one model whose k=0 every "worse" is measured against: ``pretrained`` when evaluated, else the first model."""
    models = list(dict.fromkeys(r.model for r in records))
    return BASELINE_MODEL if BASELINE_MODEL in models else models[0]


def summarize(records: list[Record], enrolled: list[Enrolled], baseline: str | None) -> list[Row]:
    """Table rows by dataset, model, method (as first seen) and k: spread across speakers.

    "worse" compares each speaker with ``baseline``'s k=0 for every model and method (evaluation:
    :func:`baseline_model`, so a method whose own k=0 is already worse than the pretrained model cannot
    hide it), or with each model's own k=0 when ``baseline`` is None (peers: different recognizers).
    """
    groups: dict[tuple[str, str, str, int], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    before: dict[tuple[str, str, str], float] = {}
    for r in records:
        groups[(r.dataset, r.model, r.method, r.k)][r.speaker].append(r)
        if r.method == NO_ADAPTATION.name and baseline in (None, r.model):
            before[(r.dataset, r.model if baseline is None else baseline, r.speaker)] = r.cer
    facts: dict[tuple[str, str, str, int], list[Enrolled]] = defaultdict(list)
    for e in enrolled:
        facts[(e.dataset, e.model, e.method, e.k)].append(e)
    rows = []
    for (dataset, model, method, k), by_speaker in groups.items():
        cer = {s: float(np.mean([r.cer for r in rs])) for s, rs in by_speaker.items()}
        wer = [float(np.mean([r.wer for r in rs])) for rs in by_speaker.values()]
        values = np.array(list(cer.values()))
        worse = draws = None
        if k > 0:
            reference = model if baseline is None else baseline
            worse = float(np.mean([cer[s] > before[(dataset, reference, s)] + WORSE_MARGIN for s in cer]))
            draws = float(np.mean([r.cer > before[(dataset, reference, s)] + WORSE_MARGIN for s, rs in by_speaker.items() for r in rs]))
        runs = facts.get((dataset, model, method, k), [])
        guarded = [e.guard_accepted for e in runs if e.guard_accepted is not None]
        rows.append(Row(
            dataset, model, method, k, len(cer), float(values.mean()), float(values.std()), float(values.min()), float(values.max()),
            float(np.mean(wer)), worse, draws, float(np.mean(guarded)) if guarded else None,
            float(np.mean([e.adapted for e in runs])) if runs else None,
            float(np.mean([e.seconds for e in runs])) if runs else None,
        ))
    first = {key: {v: i for i, v in enumerate(dict.fromkeys(getattr(r, key) for r in records))} for key in ("dataset", "model", "method")}
    return sorted(rows, key=lambda r: (first["dataset"][r.dataset], first["model"][r.model], first["method"][r.method], r.k))
