"""Voice activity: silero-vad's bundled ONNX model, for endpointing live audio and segmenting long files.

The model that ships inside the silero-vad wheel runs directly with
onnxruntime (:class:`SileroVAD`: the same inputs, state and 64-sample
context as silero's own ``OnnxWrapper``), because the silero-vad package
imports torch, which a device that only listens and transcribes should not
have to load. :class:`Endpointer` applies silero's ``VADIterator`` rule to
live audio (tested against both); :func:`speech_segments` cuts long
recordings with the same hysteresis.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from edgemeta.runtime.audio import SAMPLE_RATE

WINDOW = 512  # samples per silero decision at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window at 16 kHz
THRESHOLD = 0.5
NEGATIVE_MARGIN = 0.15  # speech ends below THRESHOLD - NEGATIVE_MARGIN (silero's hysteresis)
# The longest piece of audio the device runs through the model at once: longer recordings are cut
# (speech_segments), and a live utterance is ended there; a body's own limit (whisper: 30 s) may be lower.
MAX_SEGMENT_SECONDS = 20.0


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


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """silero's speech probability for each ``WINDOW`` samples of 16 kHz audio (the last window zero-padded)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    audio = np.concatenate([audio, np.zeros(-len(audio) % WINDOW, dtype=np.float32)])
    model = SileroVAD()
    return np.array([model(window) for window in audio.reshape(-1, WINDOW)])


def speech_segments(
    audio: np.ndarray,
    max_segment_seconds: float = MAX_SEGMENT_SECONDS,
    min_silence_seconds: float = 0.3,
    pad_seconds: float = 0.1,
    min_speech_seconds: float = 0.25,
) -> list[Segment]:
    """Speech segments of 16 kHz audio, in order and disjoint; none is longer than ``max_segment_seconds``.

    Speech runs from a window at or above the threshold until
    ``min_silence_seconds`` stay below the threshold minus its hysteresis
    margin (the rule :class:`Endpointer` follows live); runs shorter than
    ``min_speech_seconds`` are dropped, the rest padded by ``pad_seconds`` on
    each side (never into the previous segment). A segment longer than the limit is cut
    at its least speech-like window within the limit, again until every piece
    fits, so a recording of any length becomes pieces the recognizer takes at once.
    """
    probabilities = speech_probabilities(audio)
    quiet_windows = max(1, round(min_silence_seconds * SAMPLE_RATE / WINDOW))
    runs: list[list[int]] = []  # [first window, end window) of speech
    start, quiet = None, 0
    for index, probability in enumerate(probabilities):
        if start is None:
            if probability >= THRESHOLD:
                start, quiet = index, 0
        elif probability < THRESHOLD - NEGATIVE_MARGIN:
            quiet += 1
            if quiet >= quiet_windows:
                runs.append([start, index + 1 - quiet])
                start = None
        elif probability >= THRESHOLD:
            quiet = 0
    if start is not None:
        runs.append([start, len(probabilities) - quiet])
    runs = [r for r in runs if (r[1] - r[0]) * WINDOW >= min_speech_seconds * SAMPLE_RATE]
    pad, limit = int(pad_seconds * SAMPLE_RATE), int(max_segment_seconds * SAMPLE_RATE)
    segments: list[Segment] = []
    for first, end in runs:
        begin = max(first * WINDOW - pad, segments[-1].end if segments else 0)
        finish = min(end * WINDOW + pad, len(audio))
        while finish - begin > limit:  # cut at the least speech-like window that keeps the piece within the limit
            low, high = begin // WINDOW + 1, (begin + limit) // WINDOW
            cut = (low + int(np.argmin(probabilities[low:high]))) * WINDOW if high > low else begin + limit
            segments.append(Segment(begin, cut))
            begin = cut
        segments.append(Segment(begin, finish))
    return segments


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
