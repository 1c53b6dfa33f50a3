"""The committed splits (speechocean762-train's speakers, the synthetic languages) and where shared corpora are found.

Rule (fixed in ``splits/speechocean762.json``): speakers sorted by id, every
8th starting with the first is held out of all training (16 of 125); of
those, every 16th starting with the first is **dev** (every choice: rates,
decoder weights, checkpoints, ablations) and the others are **test** (reported
figures only, never consulted for a choice). Every stage (pretraining,
meta-training, evaluation, benchmarks, the recipe) reads this file.

The languages of ``edgemeta synth --languages`` are split the same way, by
``splits/languages.json`` (its rule is stated in the file): **train**
languages may be meta-trained on, **dev** languages decide choices, **test**
languages only report and are never trained on.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

SPEECHOCEAN = "speechocean762-train"  # the corpus this split divides, by its folder name
SPLIT_FILE = Path(__file__).parent / "splits" / "speechocean762.json"
LANGUAGE_SPLIT_FILE = Path(__file__).parent / "splits" / "languages.json"
LANGUAGE_PARTS = ("train", "dev", "test")
REPO_ROOT = Path(__file__).resolve().parents[1]


@cache
def speechocean_split() -> dict[str, list[str]]:
    """``{"dev_speakers": [...], "test_speakers": [...], "train_speakers": [...]}`` of speechocean762-train."""
    return json.loads(SPLIT_FILE.read_text())


def dev_speakers() -> set[str]:
    """Held-out speechocean762-train speakers on which every choice is made."""
    return set(speechocean_split()["dev_speakers"])


def test_speakers() -> set[str]:
    """Held-out speechocean762-train speakers that only report: no choice ever reads them."""
    return set(speechocean_split()["test_speakers"])


def held_out_speakers() -> set[str]:
    """speechocean762-train speakers held out of all training: dev and test."""
    return dev_speakers() | test_speakers()


@cache
def language_split() -> dict[str, list[str]]:
    """``{"train": [...], "dev": [...], "test": [...]}``: ISO 639-1 codes of the synthetic languages."""
    split = json.loads(LANGUAGE_SPLIT_FILE.read_text())
    return {part: split[part] for part in LANGUAGE_PARTS}


def select_languages(selection: str) -> list[str]:
    """The languages of a part of the split (``train``, ``dev``, ``test``) or a comma-separated list of codes (``es,fr``).

    Raises :class:`ValueError` naming a code that is in no part of the split.
    """
    split = language_split()
    if selection in split:
        return list(split[selection])
    known = sorted(code for part in split.values() for code in part)
    codes = [code.strip() for code in selection.split(",") if code.strip()]
    unknown = [code for code in codes if code not in known]
    if unknown or not codes:
        raise ValueError(f"unknown language {', '.join(unknown) or repr(selection)}: choose {', '.join(LANGUAGE_PARTS)} "
                         f"or codes from {LANGUAGE_SPLIT_FILE.name}: {', '.join(known)}")
    return list(dict.fromkeys(codes))


def shared_corpus(name: str) -> Path | None:
    """Manifest of a corpus in the shared data folder (``$EDGEMETA_SHARED_DATA`` or ``../shared/data``), if present."""
    root = Path(os.environ.get("EDGEMETA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    manifest = root / name / "manifest.jsonl"
    return manifest if manifest.is_file() else None
