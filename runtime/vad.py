"""Voice activity: silero-vad's bundled ONNX model, for endpointing live audio and segmenting long files.

Live endpointing runs the model that ships inside the silero-vad wheel
directly with onnxruntime (:class:`SileroVAD`, the same inputs, state and
64-sample context as silero's own ``OnnxWrapper``) and applies silero's
``VADIterator`` rule in :class:`Endpointer` (tested against both), because
the silero-vad package imports torch, which a device that only listens and
transcribes should not have to load. Segmenting recordings longer than the
recognizer takes at once uses silero's ``get_speech_timestamps`` itself
(torch imported then); torchaudio is never needed (we read audio with
soundfile).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime

from edgemeta.runtime.audio import SAMPLE_RATE

WINDOW = 512  # samples per silero decision at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window at 16 kHz
THRESHOLD = 0.5
NEGATIVE_MARGIN = 0.15  # speech ends below THRESHOLD - NEGATIVE_MARGIN (silero's hysteresis)


def model_path() -> Path:
    """silero-vad's ONNX model inside its installed wheel, found without importing the package (it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise RuntimeError("silero-vad is not installed: pip install silero-vad")
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


class SileroVAD:
    """Speech probability of successive 512-sample windows of 16 kHz audio; the model's state carries across calls."""

    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        """Forget the audio so far."""
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros((1, CONTEXT), dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """Probability that the next ``WINDOW`` samples hold speech."""
        x = np.concatenate([self.context, np.asarray(window, dtype=np.float32).reshape(1, WINDOW)], axis=1)
        probability, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)})
        self.context = x[:, -CONTEXT:]
        return float(probability[0, 0])


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in samples at 16 kHz: ``audio[start:end]``."""

    start: int
    end: int


@lru_cache(maxsize=1)
def _file_model():
    """silero's own model wrapper for :func:`speech_segments` (it resets the model's state per call)."""
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # silero's use of importlib.resources.path
        return load_silero_vad(onnx=True)


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
    import torch
    from silero_vad import get_speech_timestamps

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
    """Streaming speech start/end detection on 16 kHz audio of any chunk size (silero's ``VADIterator`` rule).

    :meth:`feed` returns ``("start", sample)`` / ``("end", sample)`` events in
    absolute sample positions since the first chunk: speech starts at the
    first window at or above the threshold (moved ``pad_seconds`` earlier)
    and ends once ``silence_seconds`` have stayed below the threshold minus
    its hysteresis margin (moved ``pad_seconds`` later).
    """

    def __init__(self, silence_seconds: float = 0.25, pad_seconds: float = 0.1) -> None:
        self.model = SileroVAD()
        self.silence_samples = SAMPLE_RATE * silence_seconds
        self.pad_samples = SAMPLE_RATE * pad_seconds
        self._pending = np.zeros(0, dtype=np.float32)
        self.position = 0  # samples given to the model so far
        self.speaking = False
        self.quiet_since = 0  # where the current stretch below the lower threshold began (0: none)

    def feed(self, chunk: np.ndarray) -> list[tuple[str, int]]:
        """Take the next audio samples; return the speech start/end events they complete."""
        self._pending = np.concatenate([self._pending, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        events = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            event = self._step(window)
            if event:
                events.append(event)
        return events

    def _step(self, window: np.ndarray) -> tuple[str, int] | None:
        self.position += WINDOW
        probability = self.model(window)
        if probability >= THRESHOLD:
            self.quiet_since = 0
            if not self.speaking:
                self.speaking = True
                return "start", int(max(0, self.position - self.pad_samples - WINDOW))
            return None
        if probability < THRESHOLD - NEGATIVE_MARGIN and self.speaking:
            if not self.quiet_since:
                self.quiet_since = self.position
            if self.position - self.quiet_since >= self.silence_samples:
                end = int(self.quiet_since + self.pad_samples - WINDOW)
                self.quiet_since, self.speaking = 0, False
                return "end", end
        return None
