"""Build the runtime's character n-gram language model from word counts.

Word counts come from running text a user gives (their own domain: commands,
names) or, by default, from the `wordfreq` package's English word
frequencies (data CC BY-SA 4.0, see its README), scaled to a corpus of
``DEFAULT_CORPUS_WORDS`` words. Each word is counted as the symbol sequence
" word " with histories that start at its leading space, and the n-gram
estimates are interpolated Witten–Bell, whose smoothing needs no
count-of-counts and so works with the fractional counts of frequencies.
Histories seen less than ``min_count`` times are pruned (they back off to
their suffix at run time), which keeps the model small enough for a bundle.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from edgemeta.runtime.language_model import SYMBOLS, CharNgram
from edgemeta.runtime.text import normalize_text

DEFAULT_ORDER = 6
DEFAULT_MIN_COUNT = 500.0  # wordfreq counts are scaled to DEFAULT_CORPUS_WORDS
DEFAULT_TEXT_MIN_COUNT = 1.0  # a user's own text is small: keep every history
DEFAULT_TOP_WORDS = 100_000
DEFAULT_CORPUS_WORDS = 1e8
WORDFREQ_ATTRIBUTION = "wordfreq English word frequencies (Robyn Speer et al., data CC BY-SA 4.0)"


def wordfreq_counts(top_words: int = DEFAULT_TOP_WORDS, corpus_words: float = DEFAULT_CORPUS_WORDS) -> dict[str, float]:
    """Expected counts of wordfreq's ``top_words`` most frequent English words in a corpus of ``corpus_words``."""
    import wordfreq

    counts: dict[str, float] = {}
    for word in wordfreq.top_n_list("en", top_words):
        normalized = normalize_text(word)
        if normalized and " " not in normalized:
            counts[normalized] = counts.get(normalized, 0.0) + wordfreq.word_frequency(word, "en") * corpus_words
    return counts


def english_model(top_words: int = DEFAULT_TOP_WORDS) -> CharNgram:
    """The default model: wordfreq's ``top_words`` most frequent English words, default order and pruning."""
    return build_char_ngram(wordfreq_counts(top_words), source=WORDFREQ_ATTRIBUTION)


def text_counts(lines: Iterable[str]) -> Counter[str]:
    """Word counts of running text, normalised as the model's transcripts are."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(normalize_text(line).split())
    return counts


def build_char_ngram(word_counts: Mapping[str, float], order: int = DEFAULT_ORDER, min_count: float = DEFAULT_MIN_COUNT, source: str = "") -> CharNgram:
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lm",
        help="build the character language model a bundle decodes with",
        description=(
            "Build a character n-gram language model (.npz) for CTC beam search, from running text or, "
            "by default, from wordfreq's English word frequencies. `edgemeta export --lm FILE` puts it in a bundle."
        ),
        epilog=(
            "examples:\n"
            "  edgemeta lm --out runs/lm.npz\n"
            "  edgemeta lm --text my_commands.txt --text my_notes.txt --out runs/my-lm.npz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--text", type=Path, action="append", default=[], help="UTF-8 text to count words from (repeatable); default: wordfreq English")
    parser.add_argument("--top-words", type=int, default=DEFAULT_TOP_WORDS, help="with wordfreq: how many of its most frequent words (default: %(default)s)")
    parser.add_argument("--order", type=int, default=DEFAULT_ORDER, help="n of the n-gram: history length + 1 (default: %(default)s)")
    parser.add_argument("--min-count", type=float, help=f"prune histories seen fewer times (default: {DEFAULT_MIN_COUNT:g} with wordfreq, {DEFAULT_TEXT_MIN_COUNT:g} with --text)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Count words, build the model, write it; exit 2 on unreadable text."""
    if args.text:
        counts: Counter[str] = Counter()
        for path in args.text:
            try:
                counts.update(text_counts(path.read_text(encoding="utf-8").splitlines()))
            except (OSError, UnicodeDecodeError) as error:
                print(f"error: {path}: cannot read text ({error})", file=sys.stderr)
                return 2
        source = "word counts of " + ", ".join(p.name for p in args.text)
        min_count = DEFAULT_TEXT_MIN_COUNT if args.min_count is None else args.min_count
        word_counts: Mapping[str, float] = counts
    else:
        word_counts = wordfreq_counts(args.top_words)
        source = WORDFREQ_ATTRIBUTION
        min_count = DEFAULT_MIN_COUNT if args.min_count is None else args.min_count
    model = build_char_ngram(word_counts, order=args.order, min_count=min_count, source=source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"{args.out}: order {model.order}, {len(model.histories)} histories from {len(word_counts)} words, {args.out.stat().st_size / 1e6:.2f} MB")
    return 0
