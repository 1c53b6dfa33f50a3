"""Atomic checkpoints that rebuild their own model (the config travels with the weights).

A checkpoint is a dict saved with ``torch.save``:

- ``model_config``: :class:`ModelConfig` fields; ``model``: the state dict;
- ``method``: ``pretrained``, ``finetune``, ``maml``, ``fomaml``, ``reptile`` or ``meta-sgd``;
- ``inner_steps``: S, the number of adaptation steps the device runs;
- ``rates``: per-parameter learning rates for the head (Meta-SGD, name -> tensor) or ``None``;
- ``scalar_rate``: the single inner rate (MAML, Reptile, fine-tuning) or ``None``;
- ``training_speakers``: sorted speaker ids seen in training; ``provenance``: free-form dict;
- ``state``: resumable training state (optimizer, step, elapsed seconds, RNG), optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgemeta.model import ModelConfig, SpeechRecognizer
from edgemeta.runtime.atomic_file import atomic_write


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` atomically: a crash leaves the previous file intact."""
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (our own files: pickle allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def model_from_checkpoint(checkpoint: dict[str, Any]) -> SpeechRecognizer:
    """Rebuild the model a checkpoint describes and load its weights."""
    model = SpeechRecognizer(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model


def new_checkpoint(model: SpeechRecognizer, method: str, inner_steps: int, training_speakers: list[str], **fields: Any) -> dict[str, Any]:
    """A checkpoint dict for ``model`` with the standard fields (others passed through)."""
    return {
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "method": method,
        "inner_steps": inner_steps,
        "rates": None,
        "scalar_rate": None,
        "training_speakers": sorted(training_speakers),
        "provenance": {},
        **fields,
    }
