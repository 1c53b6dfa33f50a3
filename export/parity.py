"""Parity: the bundle's graphs, run by onnxruntime, against the PyTorch model they came from.

Checked on a set of clips over several lengths and batch sizes: the
log-probabilities over each utterance's valid frames must agree elementwise
within ``tolerance + RELATIVE_TOLERANCE * |log-prob|`` (``numpy.isclose``'s
rule; ``tolerance`` is :data:`TOLERANCE`, or the body's in :data:`BODY_TOLERANCE`),
and greedy transcripts must be identical; with the base head weights and with perturbed (injected) ones,
for ``model.onnx`` and, chunk by chunk, for ``stream.onnx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnxruntime
import torch
from torch.func import functional_call

from edgemeta.model import WHISPER_TINY_EN, ModelConfig, SpeechRecognizer
from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.bundle_format import LENGTHS, MODEL_FILE, STREAM_FILE, WAVEFORM
from edgemeta.runtime.ctc_decode import greedy_decode
from edgemeta.runtime.streaming import GraphStream

TOLERANCE = 1e-4
# A well-trained model gives unlikely characters log-probs of -20 to -60, where
# fp32 GRU kernels of onnxruntime and PyTorch drift apart by more than 1e-4.
RELATIVE_TOLERANCE = 1e-5
# Four attention blocks grow the fp32 rounding differences between onnxruntime's kernels and
# PyTorch's (another summation order): tiny.en's encoder outputs differed by up to 5.7e-4 on real
# clips, and the GRU and the output layer carry that into the log-probs. Measured on real dev
# clips: the GRU + head of `edgemeta train --body whisper-tiny.en` (20 minutes), max |diff| 8.6e-5
# (6.0e-5 beyond the relative term); one trained 4 minutes, 1.2e-4 (2.2e-5 beyond); a
# fresh head with its output layer scaled 30x (sharper than training makes it), 5.4e-4 (2.2e-4
# beyond). 1e-3 leaves room for longer-trained heads; identical transcripts stay required, and a
# wrong graph (other weights, lost masking) is off by far more.
BODY_TOLERANCE = {WHISPER_TINY_EN: 1e-3}
BATCH_SIZES = (1, 3)
CLIP_SECONDS = (0.35, 1.0, 1.7, 2.9, 0.61)


class ParityError(AssertionError):
    """An exported graph disagrees with PyTorch beyond the tolerance."""


@dataclass
class ParityReport:
    """Result of one comparison: worst difference and transcript agreement over ``utterances``."""

    graph: str
    max_abs_diff: float
    utterances: int
    transcripts_differing: int
    max_excess: float  # worst |diff| - RELATIVE_TOLERANCE * |log-prob|

    def passed(self, tolerance: float = TOLERANCE) -> bool:
        return self.max_excess <= tolerance and self.transcripts_differing == 0

    def __str__(self) -> str:
        return (
            f"{self.graph}: max |diff| {self.max_abs_diff:.2e}, max |diff| - {RELATIVE_TOLERANCE:g}*|log-prob| "
            f"{self.max_excess:.2e} over {self.utterances} utterances, {self.transcripts_differing} transcripts differ"
        )


def _differences(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Largest ``|got - expected|`` and largest ``|got - expected| - RELATIVE_TOLERANCE * |expected|``."""
    diff = np.abs(got - expected)
    return float(diff.max(initial=0.0)), float((diff - RELATIVE_TOLERANCE * np.abs(expected)).max(initial=0.0))


def synthetic_clips(sample_rate: int, seconds: Sequence[float] = CLIP_SECONDS, seed: int = 0) -> list[np.ndarray]:
    """Deterministic speech-like test signals: voiced harmonic stretches with vibrato, noise bursts, pauses."""
    rng = np.random.default_rng(seed)
    clips = []
    for duration in seconds:
        n = int(duration * sample_rate)
        t = np.arange(n) / sample_rate
        pitch = rng.uniform(90, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, np.pi)), 0, None)
        noise = rng.normal(0, 0.3, n) * (envelope < 0.2)
        clips.append((0.1 * (voiced * envelope + noise)).astype(np.float32))
    return clips


def perturbed(weights: Mapping[str, torch.Tensor], seed: int = 1, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Head weights plus Gaussian noise: stands in for an adapted head in parity checks."""
    generator = torch.Generator().manual_seed(seed)
    return {name: w + scale * torch.randn(w.shape, generator=generator) for name, w in weights.items()}


def _batches(clips: Sequence[np.ndarray], batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Zero-padded ``[batch, samples]`` arrays and their lengths, ``batch_size`` clips at a time."""
    batches = []
    for start in range(0, len(clips), batch_size):
        group = clips[start : start + batch_size]
        lengths = np.array([len(c) for c in group], dtype=np.int64)
        waveform = np.zeros((len(group), lengths.max()), dtype=np.float32)
        for row, clip in enumerate(group):
            waveform[row, : len(clip)] = clip
        batches.append((waveform, lengths))
    return batches


def _reference(model: SpeechRecognizer, waveform: np.ndarray, lengths: np.ndarray, weights: Mapping[str, torch.Tensor] | None) -> np.ndarray:
    """PyTorch log-probabilities, with the head's weights replaced by ``weights`` when given."""
    args = (torch.from_numpy(waveform), torch.from_numpy(lengths))
    with torch.no_grad():
        out = model(*args) if weights is None else functional_call(model, dict(weights), args)
    return out.numpy()


def _feeds(weights: Mapping[str, torch.Tensor] | None) -> dict[str, np.ndarray]:
    return {} if weights is None else {name: w.detach().numpy().astype(np.float32) for name, w in weights.items()}


def compare_model(
    model: SpeechRecognizer,
    session: onnxruntime.InferenceSession,
    clips: Sequence[np.ndarray],
    weights: Mapping[str, torch.Tensor] | None = None,
    graph: str = MODEL_FILE,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> ParityReport:
    """``model.onnx`` (inputs ``waveform``, ``lengths``) vs ``model`` on ``clips`` batched ``batch_sizes`` ways."""
    model = model.eval()
    worst, excess, utterances, differing = 0.0, 0.0, 0, 0
    for batch_size in batch_sizes:
        for waveform, lengths in _batches(clips, batch_size):
            expected = _reference(model, waveform, lengths, weights)
            got, _, frames = session.run(None, {WAVEFORM: waveform, LENGTHS: lengths, **_feeds(weights)})
            if got.shape != expected.shape or not np.array_equal(frames, model.frame_lengths(torch.from_numpy(lengths)).numpy()):
                raise ParityError(f"{graph}: output shape {got.shape} / frame lengths {frames} differ from PyTorch's {expected.shape}")
            for row, n in enumerate(frames):
                diff, over = _differences(got[row, :n], expected[row, :n])
                worst, excess = max(worst, diff), max(excess, over)
                differing += greedy_decode(got[row], int(n)) != greedy_decode(expected[row], int(n))
                utterances += 1
    return ParityReport(graph, worst, utterances, differing, excess)


def compare_stream(
    model: SpeechRecognizer,
    bundle: Bundle,
    clips: Sequence[np.ndarray],
    weights: Mapping[str, torch.Tensor] | None = None,
    chunk_samples: int | None = None,
    session: onnxruntime.InferenceSession | None = None,
) -> ParityReport:
    """The bundle's ``stream.onnx`` fed chunk by chunk as the device feeds it (:class:`GraphStream`) vs whole-utterance ``model``.

    ``session`` reuses an open stream session; ``chunk_samples`` replaces the manifest's chunk size.
    """
    model = model.eval()
    stream = GraphStream(bundle, weights, session=session, chunk_samples=chunk_samples)
    worst, excess, differing = 0.0, 0.0, 0
    for clip in clips:
        got = stream.run(clip)[0]
        lengths = np.array([len(clip)], dtype=np.int64)
        expected = _reference(model, clip[None, :], lengths, weights)[0]
        n = int(model.frame_lengths(torch.from_numpy(lengths))[0])
        diff, over = _differences(got[:n], expected[:n])
        worst, excess = max(worst, diff), max(excess, over)
        differing += greedy_decode(got, n) != greedy_decode(expected, n)
    return ParityReport(f"{STREAM_FILE} (chunks of {stream.chunk} samples)", worst, len(clips), differing, excess)


def tolerance_for(config: ModelConfig) -> float:
    """The absolute tolerance for a model of this config: its body's, else :data:`TOLERANCE`."""
    return BODY_TOLERANCE.get(config.body, TOLERANCE)


def require(report: ParityReport, tolerance: float = TOLERANCE) -> ParityReport:
    """Return ``report`` if it passed, else raise :class:`ParityError` describing it."""
    if not report.passed(tolerance):
        raise ParityError(f"parity failed (tolerance {tolerance:g}): {report}")
    return report
