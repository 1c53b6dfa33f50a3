"""Voice activity: silero-vad's bundled ONNX model, for segmenting long files and endpointing live audio.

``load_silero_vad(onnx=True)`` runs the model that ships inside the
silero-vad wheel through onnxruntime; it needs torch (tensors) but never
torchaudio, which silero uses only for its optional file I/O (we read audio
with soundfile).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from silero_vad import VADIterator, get_speech_timestamps, load_silero_vad

from edgemeta.runtime.audio import SAMPLE_RATE

WINDOW = 512  # samples per silero decision at 16 kHz (32 ms)
THRESHOLD = 0.5


def load_model():
    """A new silero-vad ONNX session (stateful: one per stream)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # silero's use of importlib.resources.path
        return load_silero_vad(onnx=True)


@lru_cache(maxsize=1)
def _file_model():
    """One silero session for :func:`speech_segments` (it resets the model's state per call)."""
    return load_model()


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in samples at 16 kHz: ``audio[start:end]``."""

    start: int
    end: int


def speech_segments(
    audio: np.ndarray,
    max_segment_seconds: float = 20.0,
    min_silence_seconds: float = 0.3,
    pad_seconds: float = 0.1,
) -> list[Segment]:
    """Speech segments of 16 kHz audio; none is longer than ``max_segment_seconds``.

    Long segments are cut at the longest pause inside them (silero's rule), so
    a recording of any length becomes pieces the recognizer can take at once.
    """
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        _file_model(),
        threshold=THRESHOLD,
        sampling_rate=SAMPLE_RATE,
        max_speech_duration_s=max_segment_seconds,
        min_silence_duration_ms=int(min_silence_seconds * 1000),
        speech_pad_ms=int(pad_seconds * 1000),
    )
    return [Segment(int(s["start"]), min(int(s["end"]), len(audio))) for s in stamps]


class Endpointer:
    """Streaming speech start/end detection on 16 kHz audio of any chunk size.

    :meth:`feed` returns ``("start", sample)`` / ``("end", sample)`` events in
    absolute sample positions since the first chunk; an utterance ends
    after ``silence_seconds`` below the threshold.
    """

    def __init__(self, silence_seconds: float = 0.25, pad_seconds: float = 0.1) -> None:
        self._iterator = VADIterator(
            load_model(),
            threshold=THRESHOLD,
            sampling_rate=SAMPLE_RATE,
            min_silence_duration_ms=int(silence_seconds * 1000),
            speech_pad_ms=int(pad_seconds * 1000),
        )
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, chunk: np.ndarray) -> list[tuple[str, int]]:
        """Take the next audio samples; return the speech start/end events they complete."""
        self._pending = np.concatenate([self._pending, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        events = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            event = self._iterator(torch.from_numpy(window.copy()))
            if event:
                kind = "start" if "start" in event else "end"
                events.append((kind, int(event[kind])))
        return events
