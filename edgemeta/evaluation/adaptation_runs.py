"""The evaluation loop: every dataset, model, method, k, speaker and seed, one record each."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

from edgemeta.adaptation_methods import NO_ADAPTATION
from edgemeta.evaluation.datasets import Dataset
from edgemeta.evaluation.method_plans import MethodPlan
from edgemeta.evaluation.models import Model
from edgemeta.runtime.metrics import ErrorCounts, score

RECORD_KEYS = ("dataset", "model", "method", "k", "speaker", "seed", "cer", "wer")


@dataclass
class Run:
    """Which run: dataset, model, method, k, speaker and seed (flat fields, so the JSON lines stay flat)."""

    dataset: str
    model: str
    method: str
    k: int
    speaker: str
    seed: int


@dataclass
class Record(Run):
    """One JSON line: a speaker's CER and WER on its scored clips."""

    cer: float
    wer: float


@dataclass
class Enrolled(Run):
    """Side facts of one adaptation, for the summary."""

    adapted: bool
    guard_accepted: bool | None
    guard_rule: str | None
    clips_left_out: int
    seconds: float
    steps: int | None = None  # the adapted head's gradient steps (the guard's choice); None in summaries written before it


def _record(dataset: str, model: str, method: str, k: int, speaker: str, seed: int, counts: ErrorCounts) -> Record:
    return Record(dataset, model, method, k, speaker, seed, round(counts.cer, 6), round(counts.wer, 6))


def protocol_notes(datasets: list[Dataset], models: dict[str, Model], ks: list[int]) -> list[str]:
    """How each model decodes, ks skipped for speakers with too few clips, and scored speakers a model was trained on (warnings)."""
    notes = [f"model {name} decodes {model.decoding}" for name, model in models.items()]
    for dataset in datasets:
        for k in ks:
            short = [s.speaker for s in dataset.speakers if k > len(s.pool)]
            if short:
                notes.append(f"{dataset.name}: k={k} skipped for {len(short)} speaker(s) with fewer adaptation clips: {', '.join(short)}")
        for name, model in models.items():
            seen = sorted(model.training_speakers & {s.speaker for s in dataset.speakers})
            if seen:
                notes.append(f"warning: {dataset.name}: {len(seen)} scored speaker(s) are among model {name}'s "
                             f"training speakers: {', '.join(seen)}")
    return notes


def evaluate(
    datasets: list[Dataset], models: dict[str, Model], plans: list[MethodPlan], ks: list[int], seeds: int
) -> tuple[list[Record], list[Enrolled]]:
    """Every record of the protocol and the side facts of every adaptation."""
    records: list[Record] = []
    enrolled: list[Enrolled] = []
    adaptive_ks = [k for k in ks if k > 0]
    total = sum(
        len(d.speakers) + seeds * sum(k <= len(s.pool) for s in d.speakers for k in adaptive_ks) * sum(p.model == name for p in plans)
        for d in datasets for name in models
    )
    bar = tqdm(total=total, desc="eval", unit="run", file=sys.stderr)
    for dataset in datasets:
        for name, model in models.items():
            own = [p for p in plans if p.model == name]
            for speaker in dataset.speakers:
                references = [u.text for u in speaker.scored]
                prepared = model.prepare(speaker.scored)
                base = score(references, model.transcribe(prepared, None))
                bar.update(1)
                for seed in range(seeds):
                    records.append(_record(dataset.name, name, NO_ADAPTATION.name, 0, speaker.speaker, seed, base))
                    if 0 in ks:
                        records += [_record(dataset.name, name, p.method, 0, speaker.speaker, seed, base) for p in own]
                    for k in adaptive_ks:
                        if k > len(speaker.pool):
                            continue
                        support = speaker.support(seed, k)
                        for plan in own:
                            started = time.perf_counter()
                            adaptation = model.adapt(support, plan.rates)
                            seconds = time.perf_counter() - started
                            counts = score(references, model.transcribe(prepared, adaptation.weights))
                            records.append(_record(dataset.name, name, plan.method, k, speaker.speaker, seed, counts))
                            enrolled.append(Enrolled(
                                dataset.name, name, plan.method, k, speaker.speaker, seed, adaptation.adapted,
                                adaptation.guard_accepted, adaptation.guard_rule, adaptation.clips_left_out, round(seconds, 4),
                                adaptation.steps,
                            ))
                            bar.update(1)
    bar.close()
    return records, enrolled
