"""Shared fixtures: a tiny model and checkpoint, deterministic seeds, CI policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from edgemeta.checkpoint import new_checkpoint, save_checkpoint
from edgemeta.model import ModelConfig, SpeechRecognizer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"

TINY_CONFIG = dict(n_mels=40, channels=32, blocks=2, kernel_size=5, expansion=2, gru_hidden=32)


def skip_or_fail(reason: str) -> None:
    """Skip locally; with CI=true a missing prerequisite is a failure, never a skip."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_model() -> SpeechRecognizer:
    torch.manual_seed(0)
    return SpeechRecognizer(ModelConfig(**TINY_CONFIG)).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model saved as a Meta-SGD checkpoint with per-parameter rates."""
    torch.manual_seed(0)
    model = SpeechRecognizer(ModelConfig(**TINY_CONFIG)).eval()
    rates = {name: torch.full_like(p, 0.01) for name, p in model.named_parameters() if name.startswith("head.")}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, new_checkpoint(model, "meta-sgd", 3, ["spk-a", "spk-b"], rates=rates))
    return path


def shared_data(name: str) -> Path:
    """Path of a corpus in ../shared/data, skipping (failing in CI) when absent."""
    path = SHARED / "data" / name / "manifest.jsonl"
    if not path.is_file():
        skip_or_fail(f"{path} is missing")
    return path
