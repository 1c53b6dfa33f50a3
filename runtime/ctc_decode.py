"""CTC decoding: collapse repeats, drop blanks."""

from __future__ import annotations

import numpy as np

from edgemeta.runtime.text import BLANK_ID, VOCABULARY


def greedy_decode(log_probs: np.ndarray, length: int | None = None) -> str:
    """Best-path transcript of one utterance's ``[frames, vocabulary]`` scores."""
    best = np.asarray(log_probs)[: length if length is not None else len(log_probs)].argmax(-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(VOCABULARY[i] for i in best[keep] if i != BLANK_ID).strip()


def greedy_decode_batch(log_probs: np.ndarray, lengths: np.ndarray | list[int]) -> list[str]:
    """:func:`greedy_decode` for each row of a ``[batch, frames, vocabulary]`` array."""
    return [greedy_decode(row, int(n)) for row, n in zip(log_probs, lengths)]
