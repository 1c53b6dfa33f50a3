"""Transcription with onnxruntime: the bundle's ``model.onnx`` with the base or a user's adapted head.

The head's weights are overridable initializers of the graph, so a user's
head is fed with every run (``bundle.head_inputs``); one session serves the
base head and every user. Text comes from the bundle's decoder (beam search
with its language model when it has one). Arrays are transcribed in batches
of similar lengths; recordings longer than ``max_segment_seconds`` (at most the
bundle's own limit: 30 s for a whisper body) are cut at pauses by
voice activity (silero-vad's model) and returned with timestamps. It all
runs on onnxruntime and numpy: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgemeta.runtime.audio import AudioError, read_audio
from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.bundle_format import FEATURES, FRAME_LENGTHS, LENGTHS, LOG_PROBS, WAVEFORM
from edgemeta.runtime.vad import MAX_SEGMENT_SECONDS, speech_segments

BATCH_SECONDS = 120.0  # padded audio per onnxruntime call, bounds memory


@dataclass
class ModelOutput:
    """One waveform's model outputs, trimmed to its own frames."""

    log_probs: np.ndarray  # [frames, vocabulary]
    features: np.ndarray  # [frames, feature_size]: the head's input


@dataclass
class TimedText:
    """Text of one stretch of a recording; times in seconds from its start."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """A recording's text and the segments it was decoded in."""

    text: str
    duration: float
    segments: list[TimedText] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {
            "text": self.text,
            "duration": round(self.duration, 3),
            "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in self.segments],
        }


class Recognizer:
    """Speech to text with a bundle's ONNX model on the CPU.

    ``head`` (name -> torch tensor or array, names as ``bundle.head_names``) replaces the
    base head; ``None`` keeps the bundle's own. ``threads`` sets onnxruntime's
    intra-op threads; ``greedy`` decodes best-path even when the bundle has a
    language model; ``words`` (word -> count) restricts transcripts to
    sequences of those words (:meth:`Bundle.decoder`).
    """

    def __init__(
        self,
        bundle: Bundle,
        head: Mapping[str, Any] | None = None,
        threads: int = 1,
        int8: bool = False,
        max_segment_seconds: float = MAX_SEGMENT_SECONDS,
        greedy: bool = False,
        words: Mapping[str, float] | None = None,
    ) -> None:
        self.bundle = bundle
        self.decode = bundle.decoder(greedy, words)
        self.max_segment_seconds = min(max_segment_seconds, bundle.max_segment_seconds or max_segment_seconds)
        self.session = bundle.session(threads=threads, int8=int8)
        self._head_feeds: dict[str, np.ndarray] = {}
        self.set_head(head)

    def set_head(self, head: Mapping[str, Any] | None) -> None:
        """Use ``head`` from now on (``None``: the base head)."""
        self._head_feeds = {} if head is None else self.bundle.head_inputs(head)

    def _run_batch(self, waveforms: Sequence[np.ndarray]) -> list[ModelOutput]:
        lengths = np.array([len(w) for w in waveforms], dtype=np.int64)
        batch = np.zeros((len(waveforms), int(lengths.max())), dtype=np.float32)
        for row, waveform in zip(batch, waveforms):
            row[: len(waveform)] = waveform
        log_probs, features, frame_lengths = self.session.run(
            [LOG_PROBS, FEATURES, FRAME_LENGTHS], {WAVEFORM: batch, LENGTHS: lengths, **self._head_feeds}
        )
        return [ModelOutput(lp[:n], ft[:n]) for lp, ft, n in zip(log_probs, features, frame_lengths.tolist())]

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[ModelOutput]:
        """Model outputs of mono waveforms at the bundle's sample rate, batched by similar length, in input order.

        Raises ``ValueError`` for a waveform longer than the bundle's ``max_segment_seconds``
        (:meth:`transcribe` segments those first).
        """
        limit = self.bundle.max_segment_seconds
        if limit is not None and (longest := max(map(len, waveforms), default=0)) > limit * self.bundle.sample_rate:
            raise ValueError(f"{self.bundle.source}: the model takes at most {limit:g} s at once, "
                             f"not {longest / self.bundle.sample_rate:.1f} s (transcribe() cuts long audio at pauses)")
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        outputs: list[ModelOutput | None] = [None] * len(waveforms)
        limit = BATCH_SECONDS * self.bundle.sample_rate
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(waveforms[order[end]]) * (end - start + 1) <= limit:
                end += 1
            chosen = order[start:end]
            for index, output in zip(chosen, self._run_batch([waveforms[i] for i in chosen])):
                outputs[index] = output
            start = end
        return outputs  # type: ignore[return-value]

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcripts of mono waveforms at the bundle's sample rate; long ones are segmented by voice activity."""
        rate = self.bundle.sample_rate
        pieces: list[tuple[int, int, int]] = []  # (waveform index, start sample, end sample)
        for index, waveform in enumerate(waveforms):
            if len(waveform) <= self.max_segment_seconds * rate:
                pieces.append((index, 0, len(waveform)))
            else:
                pieces += [(index, s.start, s.end) for s in speech_segments(waveform, self.max_segment_seconds)]
        outputs = self.infer([waveforms[i][a:b] for i, a, b in pieces])
        transcripts = [Transcript("", len(w) / rate) for w in waveforms]
        for (index, a, b), output in zip(pieces, outputs):
            text = self.decode(output.log_probs)
            if text or len(waveforms[index]) <= self.max_segment_seconds * rate:
                transcripts[index].segments.append(TimedText(a / rate, b / rate, text))
        for transcript in transcripts:
            transcript.text = " ".join(s.text for s in transcript.segments if s.text)
        return transcripts

    def transcribe_files(self, paths: Iterable[str | Path], group: int = 16) -> list[Transcript | AudioError]:
        """Transcripts of audio files in order; an unreadable file gives its :class:`AudioError` instead."""
        results: list[Transcript | AudioError] = []
        paths = list(paths)
        for first in range(0, len(paths), group):
            audio: list[np.ndarray] = []
            slots: list[int] = []
            for path in paths[first : first + group]:
                try:
                    audio.append(read_audio(path, self.bundle.sample_rate))
                    slots.append(len(results))
                    results.append(Transcript("", 0.0))
                except AudioError as error:
                    results.append(error)
            for slot, transcript in zip(slots, self.transcribe(audio)):
                results[slot] = transcript
        return results
