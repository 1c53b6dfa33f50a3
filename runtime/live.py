"""Live transcription: voice-activity endpointing, partial transcripts while speaking, a final one per utterance.

With a streaming graph in the bundle (unidirectional models), audio goes
through ``stream.onnx`` chunk by chunk as it arrives, carrying the graph's
state, so the final transcript only waits for the last chunk. Without one,
the utterance so far is re-run through ``model.onnx`` every
``partial_seconds`` and once at its end. Either way a user's adapted head is
fed by name, as for files. Partials are decoded best-path; finals with the
bundle's decoder (beam search with its language model, unless ``greedy``;
with ``words``, only sequences of those words).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.ctc_decode import greedy_decode
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.streaming import GraphStream
from edgemeta.runtime.vad import MAX_SEGMENT_SECONDS, Endpointer

ENDPOINT_SILENCE_SECONDS = 0.25
PARTIAL_SECONDS = 0.5
HISTORY_SECONDS = 1.0  # audio kept before speech starts (the VAD reports starts late)


@dataclass
class LiveEvent:
    """A partial or final transcript; ``start``/``end`` in seconds since the stream began, ``at`` a monotonic clock time."""

    kind: str
    text: str
    start: float
    end: float
    at: float

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {"type": self.kind, "text": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


class _AudioHistory:
    """Recent audio at ``sample_rate`` addressed by absolute sample position (a growing buffer, trimmed from the front)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.buffer = np.zeros(4 * sample_rate, dtype=np.float32)
        self.size = 0
        self.first = 0  # absolute position of buffer[0]

    @property
    def end(self) -> int:
        """Absolute position after the last sample."""
        return self.first + self.size

    def append(self, chunk: np.ndarray) -> None:
        if self.size + len(chunk) > len(self.buffer):
            self.buffer = np.concatenate([self.buffer[: self.size], np.zeros(max(len(self.buffer), len(chunk)), dtype=np.float32)])
        self.buffer[self.size : self.size + len(chunk)] = chunk
        self.size += len(chunk)

    def slice(self, start: int, end: int) -> np.ndarray:
        return self.buffer[min(max(start - self.first, 0), self.size) : min(max(end - self.first, 0), self.size)].copy()

    def forget_before(self, position: int) -> None:
        cut = position - self.first
        if cut > self.sample_rate:  # trim in steps of a second or more, not on every chunk
            self.buffer[: self.size - cut] = self.buffer[cut : self.size]
            self.size -= cut
            self.first = position


class LiveTranscriber:
    """Turns a stream of audio chunks at the bundle's sample rate into partial and final transcripts (see the module docstring)."""

    def __init__(
        self,
        bundle: Bundle,
        head: Mapping[str, Any] | None = None,
        threads: int = 1,
        silence_seconds: float = ENDPOINT_SILENCE_SECONDS,
        partial_seconds: float = PARTIAL_SECONDS,
        max_utterance_seconds: float = MAX_SEGMENT_SECONDS,
        greedy: bool = False,
        words: Mapping[str, float] | None = None,
    ) -> None:
        self.rate = bundle.sample_rate
        self.endpointer = Endpointer(silence_seconds)
        self.partial_samples = int(partial_seconds * self.rate)
        # A body that takes whole segments (whisper: 30 s) also bounds an utterance.
        self.max_samples = int(min(max_utterance_seconds, bundle.max_segment_seconds or max_utterance_seconds) * self.rate)
        self.history = _AudioHistory(self.rate)
        self.decode = bundle.decoder(greedy, words)  # finals; partials are best-path, cheap enough to repeat
        self.streaming = bundle.streaming is not None
        if self.streaming:
            self.stream = GraphStream(bundle, head, threads=threads)
        else:
            self.recognizer = Recognizer(bundle, head, threads=threads)
        self.utterance_start: int | None = None
        self.fed = 0  # streaming: absolute position up to which audio went into the graph
        self.last_partial_at = 0
        self.last_partial = ""

    def _begin(self, start: int) -> None:
        self.utterance_start, self.fed, self.last_partial_at, self.last_partial = start, start, start, ""
        if self.streaming:
            self.stream.reset()

    def _text_until(self, end: int, last: bool) -> str:
        decode = self.decode if last else greedy_decode
        if self.streaming:
            self.stream.push(self.history.slice(self.fed, end), last=last)
            self.fed = end
            log_probs = self.stream.log_probs()[0]
            return decode(log_probs) if len(log_probs) else ""
        audio = self.history.slice(self.utterance_start, end)
        return decode(self.recognizer.infer([audio])[0].log_probs) if len(audio) else ""

    def _final(self, end: int) -> LiveEvent:
        text = self._text_until(end, last=True)
        event = LiveEvent("final", text, self.utterance_start / self.rate, end / self.rate, time.monotonic())
        self.utterance_start = None
        return event

    def feed(self, chunk: np.ndarray) -> list[LiveEvent]:
        """Take the next chunk of audio (at the bundle's sample rate); return the transcripts it completes."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.history.append(chunk)
        events = []
        for kind, position in self.endpointer.feed(chunk):
            if kind == "start" and self.utterance_start is None:
                self._begin(position)
            elif kind == "end" and self.utterance_start is not None:
                events.append(self._final(max(position, self.utterance_start)))
        now = self.history.end
        if self.utterance_start is not None:
            if now - self.utterance_start >= self.max_samples:
                cut = self.utterance_start + self.max_samples  # never past the limit, not even by part of a chunk
                events.append(self._final(cut))
                self._begin(cut)
            elif self.streaming or now - self.last_partial_at >= self.partial_samples:
                text = self._text_until(now, last=False)
                self.last_partial_at = now
                if text != self.last_partial:
                    self.last_partial = text
                    events.append(LiveEvent("partial", text, self.utterance_start / self.rate, now / self.rate, time.monotonic()))
        keep_from = now - int(HISTORY_SECONDS * self.rate)
        self.history.forget_before(keep_from if self.utterance_start is None else min(keep_from, self.utterance_start))
        return events

    def finish(self) -> list[LiveEvent]:
        """End of input: the final transcript of an utterance still open, if any."""
        return [self._final(self.history.end)] if self.utterance_start is not None else []

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[LiveEvent]:
        """Events for a whole stream of chunks (the last utterance is closed when the stream ends)."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()


def record_utterance(
    chunks: Iterator[np.ndarray],
    sample_rate: int,
    wait_seconds: float = 10.0,
    max_seconds: float = 15.0,
    silence_seconds: float = 0.8,
) -> np.ndarray | None:
    """One spoken utterance from a stream of chunks at ``sample_rate``: from speech start to ``silence_seconds`` of silence.

    ``None`` when nobody speaks within ``wait_seconds``; cut at ``max_seconds``.
    """
    endpointer = Endpointer(silence_seconds)
    history = _AudioHistory(sample_rate)
    start: int | None = None
    for chunk in chunks:
        history.append(chunk)
        for kind, position in endpointer.feed(chunk):
            if kind == "start" and start is None:
                start = position
            elif kind == "end" and start is not None:
                return history.slice(start, position)
        if start is None and history.end > wait_seconds * sample_rate:
            return None
        if start is not None and history.end - start > max_seconds * sample_rate:
            return history.slice(start, history.end)
    return history.slice(start, history.end) if start is not None else None
