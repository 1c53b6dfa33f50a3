"""CTC decoding: best path (collapse repeats, drop blanks) or prefix beam search with a language model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from edgemeta.runtime.language_model import CharNgram, build_char_ngram
from edgemeta.runtime.text import BLANK_ID, VOCABULARY

Decoder = Callable[..., str]  # (log_probs [frames, vocabulary], length=None) -> text
_Paths = tuple[float, float]  # a prefix's (log P ending in blank, log P ending in a character) so far
_Prior = tuple[float, float]  # a prefix's (weighted LM log-prob, character bonus)
_SPACE = VOCABULARY.index(" ")
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


def _score(paths: _Paths, prior: _Prior) -> float:
    """A prefix's beam-search score: its CTC log-probability plus its prior (added in that order)."""
    return _log_add(*paths) + prior[0] + prior[1]


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
        beams: dict[str, _Paths] = {"": (0.0, -math.inf)}
        priors: dict[str, _Prior] = {"": (0.0, 0.0)}  # every prefix reached so far: a prefix's prior depends on it alone
        for candidates in self._candidates(log_probs):
            beams = self._prune(self._extend(beams, candidates, priors), priors)
        finals = [prefix for prefix in beams if self._complete(prefix)]
        if not finals:  # a closed vocabulary whose every surviving prefix ends inside a word
            return ""
        best = max(finals, key=lambda q: _score(beams[q], priors[q]) + self._word_end(q))
        return best.strip()

    def _candidates(self, log_probs: np.ndarray) -> list[list[tuple[int, float]]]:
        """Each frame's outputs to expand as (index, log-probability), in index order: those not below ``prune``, or the best."""
        keep = log_probs >= np.minimum(self.prune, log_probs.max(axis=1, keepdims=True))
        return [[(c, row[c]) for c in np.flatnonzero(mask).tolist()] for row, mask in zip(log_probs.tolist(), keep)]

    def _extend(self, beams: dict[str, _Paths], candidates: list[tuple[int, float]], priors: dict[str, _Prior]) -> dict[str, _Paths]:
        """Every prefix one frame on: each of ``beams`` followed by each of the frame's ``candidates``; new prefixes' priors join ``priors``."""
        blank_end: dict[str, float] = {}
        char_end: dict[str, float] = {}
        closed = self.words is not None
        for prefix, (blank, char) in beams.items():
            total = _log_add(blank, char)
            last = prefix[-1:]
            for c, p in candidates:
                if c == BLANK_ID:  # a prefix's only blank path this frame (each prefix and output appears once)
                    blank_end[prefix] = total + p
                    continue
                ch = VOCABULARY[c]
                if c == _SPACE and last in ("", " "):  # no leading or double spaces
                    char_end[prefix] = _log_add(char_end.get(prefix, -math.inf), total + p)
                    continue
                source = total
                if ch == last:  # a repeat collapses (the prefix stays: always allowed); the character again needs a blank between
                    char_end[prefix] = _log_add(char_end.get(prefix, -math.inf), char + p)
                    source = blank
                if source == -math.inf or (closed and not self._allows(prefix, ch)):
                    continue
                extended = prefix + ch
                if extended not in priors:
                    priors[extended] = self._prior(prefix, c, priors[prefix][0])
                char_end[extended] = _log_add(char_end.get(extended, -math.inf), source + p)
        # the union's order breaks ties in _prune
        return {prefix: (blank_end.get(prefix, -math.inf), char_end.get(prefix, -math.inf)) for prefix in set(blank_end) | set(char_end)}

    def _prune(self, scored: dict[str, _Paths], priors: dict[str, _Prior]) -> dict[str, _Paths]:
        """The ``beam`` best-scoring prefixes of ``scored``, best first (ties in ``scored``'s order)."""
        score = {prefix: _score(paths, priors[prefix]) for prefix, paths in scored.items()}
        return {prefix: scored[prefix] for prefix in sorted(score, key=score.__getitem__, reverse=True)[: self.beam]}

    def _prior(self, prefix: str, index: int, lm: float) -> _Prior:
        """The prior of ``prefix`` followed by output ``index``, from ``prefix``'s weighted LM log-prob ``lm``."""
        lm += self.lm_weight * float(self.lm.next_log_probs(_history(prefix))[index - 1])
        return lm, self.char_bonus * len((prefix + VOCABULARY[index]).replace(" ", ""))

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
