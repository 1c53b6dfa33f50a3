"""Word frequencies for the decoder's character language model, and ``edgemeta lm``, which builds it from them.

The same package's lists of other languages supply the words that synthetic
speakers of those languages read (:func:`common_words`).

Word counts come from running text a user gives (their own domain: commands,
names) or, by default, from the `wordfreq` package's English word
frequencies (data CC BY-SA 4.0, see its README), scaled to a corpus of
``DEFAULT_CORPUS_WORDS`` words; the model is estimated by the runtime's
:func:`edgemeta.runtime.language_model.build_char_ngram`. Histories seen less
than ``min_count`` times are pruned, which keeps the English model small
enough for a bundle.
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from edgemeta.runtime.language_model import (
    DEFAULT_ORDER,
    DEFAULT_TEXT_MIN_COUNT,
    CharNgram,
    LanguageModelError,
    build_char_ngram,
    read_text_counts,
)
from edgemeta.runtime.text import normalize_text

DEFAULT_MIN_COUNT = 500.0  # wordfreq counts are scaled to DEFAULT_CORPUS_WORDS
DEFAULT_TOP_WORDS = 100_000
DEFAULT_CORPUS_WORDS = 1e8
WORDFREQ_ATTRIBUTION = "wordfreq English word frequencies (Robyn Speer et al., data CC BY-SA 4.0)"
DEFAULT_COMMON_WORDS = 2000
# wordfreq files Croatian, Bosnian and Serbian (Latin script) together as Serbo-Croatian.
WORDFREQ_CODES = {"hr": "sh"}


def wordfreq_counts(top_words: int = DEFAULT_TOP_WORDS, corpus_words: float = DEFAULT_CORPUS_WORDS) -> dict[str, float]:
    """Expected counts of wordfreq's ``top_words`` most frequent English words in a corpus of ``corpus_words``."""
    import wordfreq

    counts: dict[str, float] = {}
    for word in wordfreq.top_n_list("en", top_words):
        normalized = normalize_text(word)
        if normalized and " " not in normalized:
            counts[normalized] = counts.get(normalized, 0.0) + wordfreq.word_frequency(word, "en") * corpus_words
    return counts


@lru_cache(maxsize=None)
def common_words(language: str, count: int = DEFAULT_COMMON_WORDS) -> tuple[str, ...]:
    """wordfreq's ``count`` most frequent words of ``language`` (ISO 639-1), spelled as the language writes them.

    Words with a digit (the normaliser would spell it in English) or with no
    letter left after :func:`normalize_text` are left out, so every word folds
    to a non-empty transcript in the model's vocabulary.
    """
    import wordfreq

    words = wordfreq.top_n_list(WORDFREQ_CODES.get(language, language), count)
    if not words:
        raise ValueError(f"wordfreq has no word list for language {language!r}")
    return tuple(w for w in words if not any(c.isdigit() for c in w) and any(c.isalpha() for c in normalize_text(w)))


def english_model(top_words: int = DEFAULT_TOP_WORDS) -> CharNgram:
    """The default model: wordfreq's ``top_words`` most frequent English words, default order and pruning."""
    return build_char_ngram(wordfreq_counts(top_words), min_count=DEFAULT_MIN_COUNT, source=WORDFREQ_ATTRIBUTION)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta lm``."""
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
        try:
            counts = read_text_counts(args.text)
        except LanguageModelError as error:
            print(f"error: {error}", file=sys.stderr)
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
