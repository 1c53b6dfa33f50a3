"""Prompt text for synthetic speech: a small English grammar written for this project.

Sentences come from templates (statements, questions, commands, numbers and
digit strings) filled from the word lists below, deterministically from a
``random.Random``. When a system word list exists (``/usr/share/dict/words``,
Debian ``wamerican``) it can add rarer words at run time; nothing from it is
stored in the repository. Every prompt is returned already normalised by
:func:`edgemeta.runtime.text.normalize_text`, so synthesizers speak exactly
the transcript (``"4 7"`` becomes ``"four seven"`` before synthesis).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from edgemeta.runtime.text import normalize_text

SYSTEM_WORDS = Path("/usr/share/dict/words")

DETERMINERS = ("the", "a", "this", "that", "my", "your", "our", "every", "one", "his", "her")
ADJECTIVES = (
    "red", "green", "blue", "yellow", "small", "large", "old", "new", "quiet", "loud", "warm", "cold",
    "bright", "dark", "heavy", "light", "quick", "slow", "happy", "tired", "clean", "dusty", "round",
    "sharp", "soft", "early", "late", "empty", "busy", "strange",
)
NOUNS = (
    "cat", "dog", "bird", "horse", "table", "chair", "window", "door", "garden", "river", "mountain",
    "city", "train", "bicycle", "letter", "phone", "kettle", "book", "lamp", "jacket", "market",
    "teacher", "doctor", "farmer", "child", "engine", "bridge", "kitchen", "office", "island",
    "camera", "basket", "orange", "bottle", "school", "ticket", "picture", "pencil", "street", "cloud",
)
PLURAL_NOUNS = (
    "apples", "boxes", "chairs", "friends", "minutes", "houses", "letters", "pictures", "stones",
    "cups", "shoes", "songs", "birds", "people", "children", "tickets",
)
VERBS_PAST = (
    "saw", "found", "moved", "painted", "carried", "opened", "closed", "cleaned", "watched", "fixed",
    "followed", "bought", "sold", "dropped", "lifted", "washed", "borrowed", "visited", "forgot", "liked",
)
VERBS_BASE = (
    "open", "close", "move", "find", "bring", "check", "clean", "carry", "paint", "fix", "call", "read",
    "show", "take", "lift", "wash", "play", "stop", "start", "repeat",
)
NAMES = (
    "anna", "ben", "carlos", "dina", "emma", "farid", "grace", "hiro", "ines", "jamal", "kate", "li",
    "maria", "noah", "olga", "priya", "quinn", "rosa", "sam", "tomas", "uma", "victor", "wei", "yusuf",
)
PLACES = ("at home", "in the park", "near the station", "by the sea", "at school", "in the kitchen",
          "on the bus", "at the market", "in the garden", "after lunch", "before dinner", "last night")
PREPOSITIONS = ("on", "under", "behind", "beside", "near", "inside", "next to", "in front of")
TIME_WORDS = ("today", "tomorrow", "yesterday", "tonight", "this morning", "on monday", "on friday")

_TEMPLATES: tuple[str, ...] = (
    "{det} {adj} {noun} {past} {det} {noun}",
    "{name} {past} {det} {adj} {noun} {place}",
    "{name} and {name} {past} {count} {nouns}",
    "please {verb} {det} {noun} {prep} {det} {noun}",
    "can you {verb} {det} {adj} {noun} {time}",
    "where did {name} put {det} {noun}",
    "why is {det} {noun} so {adj}",
    "is {det} {noun} {adj} or {adj}",
    "call {name} at {digits}",
    "my number is {digits}",
    "set a timer for {count} minutes",
    "turn {onoff} the {noun} {time}",
    "there are {count} {nouns} {prep} {det} {noun}",
    "{name} {past} {det} {noun} {time}",
    "the code is {digits}",
    "{verb} {det} {noun} {count} times",
    "{det} {noun} was {adj} and {adj} {place}",
    "do not {verb} {det} {adj} {noun}",
)
_DICTIONARY_TEMPLATES: tuple[str, ...] = (
    "please say the word {word}",
    "{name} wrote {word} on {det} {noun}",
    "the next word is {word}",
    "{word} and {word} are on the list",
)
_FIELD = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=4)
def load_dictionary(path: Path = SYSTEM_WORDS) -> tuple[str, ...]:
    """Plain lower-case words (3-10 letters) of a system word list; empty when the file is absent."""
    if not path.is_file():
        return ()
    words = path.read_text(encoding="utf-8", errors="ignore").split()
    return tuple(sorted({w for w in words if 3 <= len(w) <= 10 and w.isascii() and w.isalpha() and w.islower()}))


def _digits(rng: random.Random) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(rng.randint(3, 7)))


def _fill(field: str, rng: random.Random, extra_words: Sequence[str]) -> str:
    choices = {
        "det": DETERMINERS, "adj": ADJECTIVES, "noun": NOUNS, "nouns": PLURAL_NOUNS, "past": VERBS_PAST,
        "verb": VERBS_BASE, "name": NAMES, "place": PLACES, "prep": PREPOSITIONS, "time": TIME_WORDS,
        "onoff": ("on", "off"), "word": extra_words,
    }
    if field == "digits":
        return _digits(rng)
    if field == "count":
        return str(rng.choice((rng.randint(2, 12), rng.randint(13, 99), rng.randint(100, 999))))
    return rng.choice(choices[field])


def generate_prompt(rng: random.Random, extra_words: Sequence[str] = ()) -> str:
    """One normalised sentence; with ``extra_words``, a fifth of prompts use one of them."""
    templates = _DICTIONARY_TEMPLATES if extra_words and rng.random() < 0.2 else _TEMPLATES
    template = rng.choice(templates)
    return normalize_text(_FIELD.sub(lambda m: _fill(m.group(1), rng, extra_words), template))


def generate_prompts(count: int, seed: int, extra_words: Sequence[str] = ()) -> list[str]:
    """``count`` normalised sentences, the same for the same seed and word list."""
    rng = random.Random(seed)
    return [generate_prompt(rng, extra_words) for _ in range(count)]
