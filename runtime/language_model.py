"""A character n-gram language model over the model's vocabulary, for CTC beam search.

The model gives ``log P(next symbol | history)`` where the symbols are the
vocabulary without the blank (space, a–z, apostrophe) and the history is the
current word so far, preceded by a space: ``" th"`` asks what follows "th" at
the start of a word, and a space as the next symbol ends the word. Histories
never reach into the previous word, so the model is a spelling model of
single words, estimated from word counts by :func:`build_char_ngram` (on the
device from a user's text, or on the trainer from English word frequencies:
``edgemeta.word_frequencies``). Each word is counted as the symbol sequence
" word " with histories that start at its leading space, and the estimates
are interpolated Witten–Bell, whose smoothing needs no count-of-counts and so
works with fractional counts. It is stored as ``.npz`` (no pickles): the kept
histories (shortest first), their source, and a float16 table of their
smoothed next-symbol log-probabilities; a history that was pruned falls back
to its longest kept suffix, and the empty history is always kept.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from edgemeta.runtime.text import VOCABULARY, normalize_text

SYMBOLS: tuple[str, ...] = VOCABULARY[1:]  # what the model predicts: every output but the blank
DEFAULT_ORDER = 6
DEFAULT_TEXT_MIN_COUNT = 1.0  # a user's own text is small: keep every history


class LanguageModelError(ValueError):
    """A language model file that cannot be used; the message names the file."""


class CharNgram:
    """Next-symbol log-probabilities for a history of characters (see the module docstring)."""

    def __init__(self, histories: list[str], log_probs: np.ndarray, source: str = "") -> None:
        if log_probs.shape != (len(histories), len(SYMBOLS)):
            raise ValueError(f"log_probs must be [{len(histories)}, {len(SYMBOLS)}], got {list(log_probs.shape)}")
        if "" not in histories:
            raise ValueError("the empty history must be kept")
        self.order = max(len(h) for h in histories) + 1
        self.source = source  # where the words came from, for the bundle's provenance
        self._rows = {h: i for i, h in enumerate(histories)}
        self._table = log_probs.astype(np.float32)
        self._cache: dict[str, np.ndarray] = {}

    @property
    def histories(self) -> list[str]:
        """The kept histories, in table order."""
        return list(self._rows)

    @property
    def table(self) -> np.ndarray:
        """``[histories, symbols]`` next-symbol log-probabilities (natural log)."""
        return self._table

    def next_log_probs(self, history: str) -> np.ndarray:
        """Log-probabilities of each of :data:`SYMBOLS` after ``history`` (a space followed by the word so far)."""
        history = history[-(self.order - 1):] if self.order > 1 else ""
        row = self._cache.get(history)
        if row is None:
            suffix = history
            while suffix not in self._rows:
                suffix = suffix[1:]
            row = self._cache[history] = self._table[self._rows[suffix]]
        return row

    def save(self, path: str | Path) -> None:
        """Write the model as compressed ``.npz`` (``histories`` as a fixed-width unicode array)."""
        with open(path, "wb") as f:
            np.savez_compressed(f, histories=np.array(self.histories), log_probs=self._table.astype(np.float16), source=np.array(self.source))

    @classmethod
    def load(cls, path: str | Path) -> CharNgram:
        """Read a model written by :meth:`save`."""
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise LanguageModelError(f"{path}: cannot read the language model ({error})") from error
        return cls.from_bytes(data, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> CharNgram:
        """A model from the bytes of a file written by :meth:`save`; errors name ``name``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                histories, log_probs = [str(h) for h in arrays["histories"]], arrays["log_probs"]
                source = str(arrays["source"]) if "source" in arrays else ""
            return cls(histories, log_probs, source)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise LanguageModelError(f"{name}: not a character language model ({error})") from None


def text_counts(lines: Iterable[str]) -> Counter[str]:
    """Word counts of running text, normalised as the model's transcripts are."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(normalize_text(line).split())
    return counts


def read_text_counts(paths: Iterable[str | Path]) -> Counter[str]:
    """:func:`text_counts` of UTF-8 text files; an unreadable or wordless file raises :class:`LanguageModelError` naming it."""
    counts: Counter[str] = Counter()
    for path in paths:
        try:
            found = text_counts(Path(path).read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as error:
            raise LanguageModelError(f"{path}: cannot read text ({error})") from None
        if not found:
            raise LanguageModelError(f"{path}: no words in it")
        counts.update(found)
    return counts


def build_char_ngram(word_counts: Mapping[str, float], order: int = DEFAULT_ORDER, min_count: float = DEFAULT_TEXT_MIN_COUNT, source: str = "") -> CharNgram:
    """Interpolated Witten–Bell character n-gram of whole words (see the module docstring)."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    index = {ch: i for i, ch in enumerate(SYMBOLS)}
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(SYMBOLS)))
    for word, count in word_counts.items():
        if count <= 0 or not word or any(ch not in index or ch == " " for ch in word):
            continue
        sequence = f" {word} "
        for position in range(1, len(sequence)):
            symbol = index[sequence[position]]
            history = sequence[max(0, position - order + 1) : position]
            for start in range(len(history) + 1):
                counts[history[start:]][symbol] += count
    if "" not in counts:
        raise ValueError("no usable words to build a language model from")
    histories = sorted((h for h in counts if h == "" or counts[h].sum() >= min_count), key=lambda h: (len(h), h))
    probs: dict[str, np.ndarray] = {}
    for history in histories:  # shorter histories first: each interpolates with its suffix
        lower = probs[history[1:]] if history else np.full(len(SYMBOLS), 1.0 / len(SYMBOLS))
        seen = counts[history]
        types = float((seen > 0).sum())
        probs[history] = (seen + types * lower) / (seen.sum() + types)
    return CharNgram(histories, np.log(np.stack([probs[h] for h in histories])), source)
