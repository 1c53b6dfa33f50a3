"""CTC decoding: best path (collapse repeats, drop blanks) or prefix beam search with a language model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from edgemeta.runtime.language_model import CharNgram, build_char_ngram
from edgemeta.runtime.text import BLANK_ID, VOCABULARY

Decoder = Callable[..., str]  # (log_probs [frames, vocabulary], length=None) -> text
# word lists: chosen on synthetic digit strings (BENCHMARKS.md, "Word lists"); a word the audio
# fits badly must survive pruning, or no whole word may be left to end on
WORD_LIST_LM_WEIGHT = 0.5
WORD_LIST_CHAR_BONUS = 2.0
WORD_LIST_PRUNE = -10.0


def greedy_decode(log_probs: np.ndarray, length: int | None = None) -> str:
    """Best-path transcript of one utterance's ``[frames, vocabulary]`` scores."""
    best = np.asarray(log_probs)[: length if length is not None else len(log_probs)].argmax(-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(VOCABULARY[i] for i in best[keep] if i != BLANK_ID).strip()


def greedy_decode_batch(log_probs: np.ndarray, lengths: np.ndarray | list[int]) -> list[str]:
    """:func:`greedy_decode` for each row of a ``[batch, frames, vocabulary]`` array."""
    return [greedy_decode(row, int(n)) for row, n in zip(log_probs, lengths)]


def _log_add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


@dataclass(frozen=True)
class BeamSearch:
    """CTC prefix beam search with a character language model (shallow fusion).

    A prefix scores ``log P_ctc + lm_weight * log P_lm + char_bonus * characters``;
    the bonus offsets the language model's pull towards short transcripts.
    Outputs below ``prune`` (log-probability) in a frame are not expanded.
    With ``words`` (a closed vocabulary) a prefix may only grow into a
    sequence of those words, and the transcript is one (or empty).
    """

    lm: CharNgram
    # defaults chosen on the 16 held-out speechocean762 speakers' adaptation pools, before the dev/test split
    # (python -m edgemeta.benchmarks.decoder_weights, reports/decoder-weights.json)
    lm_weight: float = 0.3
    char_bonus: float = 0.5
    beam: int = 8
    prune: float = -6.0  # outputs below this log-probability are not expanded: fewer prefixes to score
    words: frozenset[str] | None = None
    _word_prefixes: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixes = frozenset(w[:i] for w in self.words for i in range(len(w) + 1)) if self.words is not None else frozenset()
        object.__setattr__(self, "_word_prefixes", prefixes)

    def _allows(self, prefix: str, ch: str) -> bool:
        """Whether ``prefix`` may grow by ``ch`` (always, without a closed vocabulary)."""
        if self.words is None:
            return True
        word = prefix[prefix.rfind(" ") + 1 :]
        return word in self.words if ch == " " else word + ch in self._word_prefixes

    def _complete(self, prefix: str) -> bool:
        """Whether ``prefix`` may end the transcript: its last word is whole (always, without a closed vocabulary)."""
        return not prefix or prefix[-1] == " " or self._allows(prefix, " ")

    def __call__(self, log_probs: np.ndarray, length: int | None = None) -> str:
        """Transcript of one utterance's ``[frames, vocabulary]`` log-probabilities."""
        log_probs = np.asarray(log_probs, dtype=np.float64)[: length if length is not None else len(log_probs)]
        if np.isnan(log_probs).any():  # a diverged head: nothing to search, and NaN would empty the beam
            return greedy_decode(log_probs)
        space = VOCABULARY.index(" ")
        # prefix -> (log P ending in blank, log P ending in a character, weighted LM log-prob)
        beams: dict[str, tuple[float, float, float]] = {"": (0.0, -math.inf, 0.0)}
        for row in log_probs:
            candidates = [int(c) for c in np.flatnonzero(row >= min(self.prune, row.max()))]
            blank_end: dict[str, float] = {}
            char_end: dict[str, float] = {}
            lm_score: dict[str, float] = {}
            for prefix, (blank, char, lm) in beams.items():
                total = _log_add(blank, char)
                lm_score[prefix] = lm
                for c in candidates:
                    p = float(row[c])
                    if c == BLANK_ID:
                        blank_end[prefix] = _log_add(blank_end.get(prefix, -math.inf), total + p)
                        continue
                    ch = VOCABULARY[c]
                    if c == space and (not prefix or prefix[-1] == " "):  # no leading or double spaces
                        char_end[prefix] = _log_add(char_end.get(prefix, -math.inf), total + p)
                        continue
                    if not self._allows(prefix, ch):
                        continue
                    source = total
                    if prefix and ch == prefix[-1]:  # a repeat collapses; the character again needs a blank between
                        char_end[prefix] = _log_add(char_end.get(prefix, -math.inf), char + p)
                        source = blank
                    if source == -math.inf:
                        continue
                    extended = prefix + ch
                    if extended not in lm_score:
                        lm_score[extended] = lm + self.lm_weight * float(self.lm.next_log_probs(_history(prefix))[c - 1])
                    char_end[extended] = _log_add(char_end.get(extended, -math.inf), source + p)
            scored = {
                prefix: (blank_end.get(prefix, -math.inf), char_end.get(prefix, -math.inf), lm_score[prefix])
                for prefix in set(blank_end) | set(char_end)
            }
            kept = sorted(scored, key=lambda q: self._score(q, *scored[q]), reverse=True)[: self.beam]
            beams = {prefix: scored[prefix] for prefix in kept}
        finals = [prefix for prefix in beams if self._complete(prefix)]
        if not finals:  # a closed vocabulary whose every surviving prefix ends inside a word
            return ""
        best = max(finals, key=lambda q: self._score(q, *beams[q]) + self._word_end(q))
        return best.strip()

    def _score(self, prefix: str, blank: float, char: float, lm: float) -> float:
        return _log_add(blank, char) + lm + self.char_bonus * len(prefix.replace(" ", ""))

    def _word_end(self, prefix: str) -> float:
        """The language model's score for the last word ending where the audio does."""
        if not prefix or prefix[-1] == " ":
            return 0.0
        return self.lm_weight * float(self.lm.next_log_probs(_history(prefix))[0])


def _history(prefix: str) -> str:
    """The language model's history after ``prefix``: a space, then the unfinished word."""
    return " " + prefix[prefix.rfind(" ") + 1 :]


def word_list_search(word_counts: Mapping[str, float]) -> BeamSearch:
    """Beam search over sequences of ``word_counts``'s words only (digits, commands, names), their counts as the prior."""
    words = frozenset(word for word, count in word_counts.items() if count > 0)
    return BeamSearch(build_char_ngram(word_counts, source="word list"), lm_weight=WORD_LIST_LM_WEIGHT,
                      char_bonus=WORD_LIST_CHAR_BONUS, prune=WORD_LIST_PRUNE, words=words)
