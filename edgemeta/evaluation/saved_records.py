"""An earlier ``edgemeta eval`` run's records re-summarized without running anything: a split's speakers, unseen voices only.

For reports whose checkpoints are gone: speechocean762-train keeps only the
committed split's ``test`` (or ``dev``) speakers; espeak-ng speakers whose
variant one of the model's training speakers used are dropped (they differ
from it only in accent, pitch or rate: not unseen). Everything else (models,
methods, k, seeds, clip lists, enrollment facts) comes from the old run's
``.summary.json``, filtered to the speakers kept, and the table, plot and
summary are rebuilt with the same code as a new run, "worse" included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgemeta.benchmarks.provenance import Provenance, summary_path
from edgemeta.evaluation import EvalError
from edgemeta.evaluation.adaptation_runs import Enrolled, Record
from edgemeta.evaluation.datasets import split_note, split_speakers
from edgemeta.evaluation.report import write_outputs
from edgemeta.evaluation.summary import Row
from edgemeta.splits import SPEECHOCEAN
from edgemeta.synth import speaker_variant, trained_variants

RUN_FACTS = ("models", "methods", "k", "seeds", "guard", "datasets", "enrollments", "notes")  # what the old summary must hold


def read_records(path: Path) -> tuple[list[Record], dict[str, Any]]:
    """The records of ``path`` (``edgemeta eval``'s JSON Lines) and its ``.summary.json``."""
    summary = summary_path(path)
    for needed in (path, summary):
        if not needed.is_file():
            raise EvalError(f"--from-records {path}: {needed} not found (it needs an edgemeta eval run's OUT and OUT.summary.json)")
    try:
        records = [Record(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        facts = json.loads(summary.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, TypeError) as error:
        raise EvalError(f"--from-records {path}: not edgemeta eval records ({error})") from None
    missing = [key for key in RUN_FACTS if key not in facts]
    if missing:
        raise EvalError(f"--from-records {path}: {summary} lacks {', '.join(missing)}")
    return records, facts


def kept_speakers(records: list[Record], split: str, seen_variants: frozenset[str]) -> tuple[dict[str, set[str]], list[str]]:
    """Speakers kept per dataset and the notes saying what was dropped and why."""
    speakers: dict[str, set[str]] = {}
    for r in records:
        speakers.setdefault(r.dataset, set()).add(r.speaker)
    scored = split_speakers(split)
    kept, notes = {}, []
    for dataset, present in speakers.items():
        if dataset == SPEECHOCEAN:
            kept[dataset] = present & scored
            missing = sorted(scored - present)
            notes.append(split_note(dataset, len(kept[dataset]), split)
                         + (f"; not in the records: {', '.join(missing)}" if missing else ""))
            continue
        seen = sorted(s for s in present if speaker_variant(s) in seen_variants)
        kept[dataset] = present - set(seen)
        if seen:
            notes.append(f"{dataset}: {len(seen)} of {len(present)} espeak-ng speakers dropped, their variant used by a "
                         f"training speaker (not unseen): {', '.join(seen)}")
    empty = sorted(d for d, s in kept.items() if not s)
    if empty:
        raise EvalError(f"no speaker left in {', '.join(empty)} after keeping the {split} split and unseen voices")
    return kept, notes


def resummarize(path: Path, out: Path, split: str, unseen_by: Path, provenance: Provenance) -> tuple[list[Row], bool]:
    """Rebuild OUT (records, .md, .png, .summary.json) from ``path``'s records; the rows and whether the run was guarded."""
    records, old = read_records(path)
    kept, notes = kept_speakers(records, split, trained_variants(unseen_by))
    mine = [r for r in records if r.speaker in kept[r.dataset]]
    enrolled = [Enrolled(**e) for e in old["enrollments"] if e["speaker"] in kept.get(e["dataset"], ())]
    changed = {d for d, s in kept.items() if s != {r.speaker for r in records if r.dataset == d}}
    old_notes = [n for n in old["notes"] if not any(n.startswith((f"{d}:", f"warning: {d}:")) for d in changed)]
    notes = [f"re-summarized from {path} ({len(mine)} of {len(records)} records) without new runs"] + notes + old_notes
    datasets = {name: {**facts, "speakers": {s: v for s, v in facts["speakers"].items() if s in kept.get(name, ())}}
                for name, facts in old["datasets"].items()}
    facts = {
        **{key: old[key] for key in ("models", "methods", "k", "seeds", "guard")},
        "split": split, "unseen_by": str(unseen_by), "datasets": datasets,
        "source": {"records": str(path), "seconds": old.get("seconds"), "provenance": old.get("provenance")},
    }
    return write_outputs(out, mine, enrolled, facts, notes, provenance), old["guard"]
