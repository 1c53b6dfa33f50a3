"""The committed speaker split of speechocean762-train and where shared corpora are found.

Rule (fixed in ``splits/speechocean762.json``): speakers sorted by id, every
8th starting with the first is held out for dev (16 of 125). Every stage
(pretraining, meta-training, evaluation, the recipe) reads this file.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

SPLIT_FILE = Path(__file__).parent / "splits" / "speechocean762.json"
REPO_ROOT = Path(__file__).resolve().parents[1]


@cache
def speechocean_split() -> dict[str, list[str]]:
    """``{"dev_speakers": [...], "train_speakers": [...]}`` of speechocean762-train."""
    return json.loads(SPLIT_FILE.read_text())


def dev_speakers() -> set[str]:
    """speechocean762-train speakers held out of all training."""
    return set(speechocean_split()["dev_speakers"])


def shared_corpus(name: str) -> Path | None:
    """Manifest of a corpus in the shared data folder (``$EDGEMETA_SHARED_DATA`` or ``../shared/data``), if present."""
    root = Path(os.environ.get("EDGEMETA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    manifest = root / name / "manifest.jsonl"
    return manifest if manifest.is_file() else None
