"""The character vocabulary and the text normaliser shared by trainer and device.

Normalisation rule (documented in the README): Unicode is folded to ASCII
(accents dropped: "é" -> "e"; letters Unicode does not decompose are spelled
in ASCII: "ß" -> "ss", "æ" -> "ae", "ø" -> "o", "ł" -> "l", "ı" -> "i", ...),
letters are lower-cased, digits are spelled out as English
words ("42" -> "forty two", "3.5" -> "three point five"), ``&`` becomes "and"
and ``%`` "percent", hyphens, slashes and underscores separate words, and any
other character is dropped. Runs of spaces collapse to one.
"""

from __future__ import annotations

import re
import unicodedata

BLANK = "<blank>"
VOCABULARY: tuple[str, ...] = (BLANK, " ", *"abcdefghijklmnopqrstuvwxyz", "'")
BLANK_ID = 0
_INDEX = {ch: i for i, ch in enumerate(VOCABULARY)}

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words (``105`` -> ``one hundred five``)."""
    if n < 0:
        raise ValueError(f"number_to_words needs n >= 0, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            words = f"{number_to_words(high)} {name}"
            return words + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group(0).replace(",", "").partition(".")
    words = number_to_words(int(whole))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {words} "


# Latin letters that NFKD leaves whole (no combining mark to drop): spelled as their languages write them in ASCII.
_LETTERS_WITHOUT_DECOMPOSITION = str.maketrans({
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ı": "i", "ħ": "h", "Ħ": "H", "ŋ": "ng", "Ŋ": "NG",
})
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_SEPARATORS = re.compile(r"[-_/\\]")
_NOT_IN_VOCABULARY = re.compile(r"[^a-z' ]")
_SPACES = re.compile(r" +")


def normalize_text(text: str) -> str:
    """Map free text onto the model's character vocabulary (see module docstring)."""
    text = text.replace("\u2019", "'").replace("`", "'").translate(_LETTERS_WITHOUT_DECOMPOSITION)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.lower().replace("&", " and ").replace("%", " percent ")
    text = _NUMBER.sub(_spell_number, text)
    text = _SEPARATORS.sub(" ", text)
    text = _NOT_IN_VOCABULARY.sub("", text.replace("\t", " ").replace("\n", " "))
    return _SPACES.sub(" ", text).strip()


def encode(text: str) -> list[int]:
    """Token ids of already-normalised text; raises on characters outside the vocabulary."""
    try:
        return [_INDEX[ch] for ch in text]
    except KeyError as error:
        raise ValueError(f"character {error.args[0]!r} is not in the vocabulary; normalize_text first") from None
