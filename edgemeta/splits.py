"""The committed speaker split of speechocean762-train and where shared corpora are found.

Rule (fixed in ``splits/speechocean762.json``): speakers sorted by id, every
8th starting with the first is held out of all training (16 of 125); of
those, every 16th starting with the first is **dev** (every choice: rates,
decoder weights, checkpoints, ablations) and the others are **test** (reported
figures only, never consulted for a choice). Every stage (pretraining,
meta-training, evaluation, benchmarks, the recipe) reads this file.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

SPEECHOCEAN = "speechocean762-train"  # the corpus this split divides, by its folder name
SPLIT_FILE = Path(__file__).parent / "splits" / "speechocean762.json"
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


def shared_corpus(name: str) -> Path | None:
    """Manifest of a corpus in the shared data folder (``$EDGEMETA_SHARED_DATA`` or ``../shared/data``), if present."""
    root = Path(os.environ.get("EDGEMETA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    manifest = root / name / "manifest.jsonl"
    return manifest if manifest.is_file() else None
