"""Character and word error rates, scored the same way everywhere.

A corpus-level rate is the sum of edits over the sum of reference units, not
the mean of per-clip rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclass
class ErrorCounts:
    """Edits and reference lengths, summed over clips."""

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0

    def add(self, reference: str, hypothesis: str) -> "ErrorCounts":
        """Count one clip (both texts already normalised)."""
        self.char_edits += edit_distance(reference, hypothesis)
        self.chars += len(reference)
        ref_words, hyp_words = reference.split(), hypothesis.split()
        self.word_edits += edit_distance(ref_words, hyp_words)
        self.words += len(ref_words)
        return self

    @property
    def cer(self) -> float:
        return self.char_edits / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return self.word_edits / max(self.words, 1)


def score(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Corpus-level counts of a list of (reference, hypothesis) pairs."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    counts = ErrorCounts()
    for ref, hyp in zip(references, hypotheses):
        counts.add(ref, hyp)
    return counts
