"""Audio through a bundle's ``stream.onnx``, chunk by chunk, as the device streams it.

Live transcription, the export's parity check and the export benchmark all
feed the streaming graph through :class:`GraphStream`, so what is checked and
measured is what the device runs. Audio is cut into chunks of
``chunk_samples`` (a multiple of the manifest's ``chunk_multiple``) and the
graph's state is carried from chunk to chunk. An utterance is ended by the
model's silent tail (``tail_samples`` of zeros, which ``model.onnx`` appends
inside the graph) and zero padding to a whole ``chunk_multiple``; fed that
way, the first ``frame_lengths`` frames equal ``model.onnx``'s.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import onnxruntime

from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.bundle_format import CHUNK, LOG_PROBS, new_state_name


class GraphStream:
    """``batch`` streams through the bundle's streaming graph, with the base head or ``head`` (name -> weights).

    ``session`` reuses an open :meth:`Bundle.stream_session` (default: a new
    one with ``threads``); ``chunk_samples`` replaces the manifest's
    suggested chunk size. Raises :class:`~edgemeta.runtime.bundle.BundleError`
    for a bundle without a streaming graph.
    """

    def __init__(
        self,
        bundle: Bundle,
        head: Mapping[str, Any] | None = None,
        session: onnxruntime.InferenceSession | None = None,
        chunk_samples: int | None = None,
        batch: int = 1,
        threads: int = 1,
    ) -> None:
        self.bundle = bundle
        self.batch = batch
        self.session = session or bundle.stream_session(threads=threads)
        streaming = bundle.streaming
        self.chunk = int(chunk_samples or streaming["chunk_samples"])
        self.multiple = int(streaming["chunk_multiple"])
        if self.chunk % self.multiple:
            raise ValueError(f"chunk_samples {self.chunk} is not a multiple of {self.multiple}")
        self.tail = int(streaming["tail_samples"])
        self.head_feeds = {} if head is None else bundle.head_inputs(head)
        self.reset()

    def reset(self) -> None:
        """Start new utterances: zero state, nothing pending, no output."""
        self.state = self.bundle.initial_stream_state(self.batch)
        self.outputs = [new_state_name(name) for name in self.state]
        self.pending = np.zeros((self.batch, 0), dtype=np.float32)
        self.pieces: list[np.ndarray] = []

    def push(self, audio: np.ndarray, last: bool = False) -> None:
        """Feed ``audio`` (``[samples]``, or ``[batch, samples]``); ``last`` ends the utterance with the silent tail.

        Whole chunks run at once; the rest waits for more audio, or, when
        ``last``, runs padded.
        """
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if audio.shape[0] != self.batch:
            raise ValueError(f"audio for {audio.shape[0]} streams, this stream has {self.batch}")
        self.pending = np.concatenate([self.pending, audio], axis=1)
        if last:
            flushed = self.pending.shape[1] + self.tail
            self.pending = np.pad(self.pending, ((0, 0), (0, self.tail + -flushed % self.multiple)))
        while self.pending.shape[1] >= self.chunk or (last and self.pending.shape[1]):
            chunk, self.pending = self.pending[:, : self.chunk], self.pending[:, self.chunk :]
            log_probs, *state = self.session.run([LOG_PROBS, *self.outputs], {CHUNK: chunk, **self.state, **self.head_feeds})
            self.pieces.append(log_probs)
            self.state = dict(zip(self.state, state))

    def log_probs(self) -> np.ndarray:
        """Log-probabilities of everything run so far, ``[batch, frames, vocabulary]``."""
        if not self.pieces:
            return np.zeros((self.batch, 0, len(self.bundle.vocabulary)), dtype=np.float32)
        return np.concatenate(self.pieces, axis=1)

    def run(self, audio: np.ndarray) -> np.ndarray:
        """Whole utterances (``[samples]`` or ``[batch, samples]``) streamed from a fresh state: their log-probabilities."""
        self.reset()
        self.push(audio, last=True)
        return self.log_probs()
