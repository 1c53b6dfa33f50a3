"""Checkpoints and bundles behind one interface: prepare scored clips, transcribe them with a head, adapt a head."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import Utterance
from edgemeta.evaluation import EvalError
from edgemeta.meta_learning import AdaptedPart, ClipBatch, adapt_head, checkpoint_rates, decode, encode_clips
from edgemeta.runtime.adapter import Adapter, EnrollmentClip
from edgemeta.runtime.bundle import BundleError, is_archive, load_bundle
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.update_rule import SGD


@dataclass
class Adaptation:
    """One enrollment's head (``None``: the base head) and what the device's guard decided, where there is one."""

    weights: dict[str, torch.Tensor] | None
    adapted: bool
    guard_accepted: bool | None = None
    guard_rule: str | None = None
    clips_left_out: int = 0
    steps: int = 0  # gradient steps the head took (0: not adapted)


class Model(Protocol):
    """What the evaluation needs of a checkpoint or a bundle."""

    name: str
    path: Path
    kind: str
    method: str | None
    scalar_rate: float | None
    scalar_rate_source: str
    has_rates: bool
    training_speakers: set[str]
    decoding: str

    def prepare(self, scored: list[Utterance]) -> Any: ...

    def transcribe(self, prepared: Any, weights: dict[str, torch.Tensor] | None) -> list[str]: ...

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation: ...


class CheckpointModel:
    """A PyTorch checkpoint: adapted by :func:`adapt_head`; scored clips' body features computed once per speaker."""

    kind = "checkpoint"
    decoding = "best-path"

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.checkpoint = load_checkpoint(path)
        scope = self.checkpoint.get("provenance", {}).get("scope", "head")
        self.part = AdaptedPart(model_from_checkpoint(self.checkpoint).eval(), scope)
        zero_shot = self.checkpoint.get("zero_shot_head")  # users who never enrolled get it; enrollment starts from the model's head
        self.base = self.part.module_names(zero_shot) if zero_shot else {n: p.detach() for n, p in self.part.params().items()}
        self.steps = int(self.checkpoint["inner_steps"])
        self.rule = self.checkpoint.get("update_rule") or SGD
        self.method = self.checkpoint.get("method")
        self.training_speakers = set(self.checkpoint.get("training_speakers") or [])
        scalar = self.checkpoint.get("scalar_rate")
        self.scalar_rate = None if scalar is None else float(scalar)
        self.scalar_rate_source = f"checkpoint {path.name}"
        self.rates = checkpoint_rates(self.checkpoint, self.steps)
        self.has_rates = self.rates is not None

    def prepare(self, scored: list[Utterance]) -> ClipBatch:
        """The scored clips through the body, once."""
        with torch.no_grad():
            return encode_clips(self.part, scored)

    def transcribe(self, prepared: ClipBatch, weights: dict[str, torch.Tensor] | None) -> list[str]:
        """Greedy transcripts of the prepared clips with ``weights`` (full names) or the stored head."""
        return decode(self.part, self.base if weights is None else self.part.module_names(weights), prepared)

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation:
        """S steps of the update rule from the stored head; ``rates=None``: the checkpoint's own."""
        # adapt_head adapts only the head of a bare model; a checkpoint dict (rebuilt per call) keeps its scope.
        source = self.part.model if self.part.scope == "head" else self.checkpoint
        return Adaptation(adapt_head(source, support, self.steps, self.rates if rates is None else rates, self.rule), True, steps=self.steps)


class BundleModel:
    """A bundle: enrolled by the runtime's :class:`Adapter`, scored with onnxruntime and the adapted head fed in."""

    kind = "bundle"

    def __init__(self, name: str, path: Path, threads: int, guard: bool, greedy: bool = False) -> None:
        self.name, self.path = name, path
        self.bundle = load_bundle(path)
        self.threads, self.guard, self.greedy = threads, guard, greedy
        self.recognizer = Recognizer(self.bundle, threads=threads, greedy=greedy)
        self.decoding = "best-path" if greedy or self.bundle.decoder_settings is None else "with beam search and the bundle's language model"
        adaptation = self.bundle.adaptation
        self.method = adaptation.get("method")
        self.scalar_rate = None if adaptation.get("scalar_rate") is None else float(adaptation["scalar_rate"])
        default = adaptation.get("scalar_rate_source") == "default"
        self.scalar_rate_source = f"bundle {path.name}" + (" (the exporter's default, not chosen on dev speakers)" if default else "")
        self.has_rates = True  # rates.safetensors is a required file
        self.training_speakers = set(self.bundle.training_speakers)
        self._adapters: dict[float | None, Adapter] = {}

    def prepare(self, scored: list[Utterance]) -> list[np.ndarray]:
        """The scored clips' audio (onnxruntime runs the whole model per head)."""
        return [u.audio for u in scored]

    def transcribe(self, prepared: list[np.ndarray], weights: dict[str, torch.Tensor] | None) -> list[str]:
        """Transcripts through onnxruntime with ``weights`` fed as the head (``None``: the base head)."""
        self.recognizer.set_head(weights)
        return [t.text for t in self.recognizer.transcribe(prepared)]

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation:
        """Enroll as the device does (``--guard``) or raw; ``rates=None``: the bundle's λ."""
        if rates not in self._adapters:
            self._adapters[rates] = Adapter(self.bundle, self.threads, rates, guard=self.guard, check_clips=self.guard, greedy=self.greedy)
        result = self._adapters[rates].enroll([EnrollmentClip(Path(u.source).name, u.audio, u.text) for u in support])
        guard = result.guard
        return Adaptation(
            result.weights if result.adapted else None, result.adapted,
            None if guard is None else guard.accepted, None if guard is None else guard.rule, len(result.clips_left_out),
            result.steps if result.adapted else 0,
        )


def load_model(name: str, path: Path, threads: int, guard: bool, greedy: bool = False) -> Model:
    """A checkpoint (``.pt``) or a bundle (directory or archive) named ``name``."""
    if path.is_dir() or is_archive(path):
        try:
            return BundleModel(name, path, threads, guard, greedy)
        except BundleError as error:
            raise EvalError(f"--model {name}: {error}") from None
    if not path.is_file():
        raise EvalError(f"--model {name}: {path}: no such checkpoint or bundle")
    try:
        return CheckpointModel(name, path)
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as error:
        raise EvalError(f"--model {name}: {path}: not a loadable checkpoint ({error})") from None
