"""Prompt text for synthetic speech: a small English grammar written for this project, narrow vocabularies, other languages.

Sentences come from templates (statements, questions, commands, numbers and
digit strings) filled from the word lists below, deterministically from a
``random.Random``. When a system word list exists (``/usr/share/dict/words``,
Debian ``wamerican``) it can add rarer words at run time; nothing from it is
stored in the repository. English prompts are returned already normalised by
:func:`edgemeta.runtime.text.normalize_text`, so synthesizers speak exactly
the transcript (``"4 7"`` becomes ``"four seven"`` before synthesis).

Narrow vocabularies (:data:`NARROW_VOCABULARIES`) are the case where a user's
own clips teach the most: every prompt of ``digits`` is a digit string spelled
as words (1-7 digits), every prompt of ``commands`` one of a few dozen device
commands. :func:`word_sentence` strings words of another language together as
that language writes them (accents and all, so a synthesizer pronounces them
right); its transcript is the normalised sentence.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

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
_COMMAND_TEMPLATES: tuple[str, ...] = (
    "turn {onoff} the {device}",
    "switch {onoff} the {device}",
    "set a timer for {minutes} minutes",
    "set an alarm for {hour} o'clock",
    "call {contact}",
    "send a message to {contact}",
    "open the {opening}",
    "close the {opening}",
    "volume {updown}",
    "play the next song",
    "stop the music",
    "what time is it",
    "what is the weather {time}",
)
COMMAND_DEVICES = ("lights", "radio", "heating", "fan", "television", "oven", "alarm")
COMMAND_OPENINGS = ("door", "window", "garage", "curtains")
COMMAND_CONTACTS = ("anna", "ben", "maria", "sam", "mum", "dad")
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


def _digits(rng: random.Random, shortest: int = 3, longest: int = 7) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(rng.randint(shortest, longest)))


def _fill(field: str, rng: random.Random, extra_words: Sequence[str]) -> str:
    choices = {
        "det": DETERMINERS, "adj": ADJECTIVES, "noun": NOUNS, "nouns": PLURAL_NOUNS, "past": VERBS_PAST,
        "verb": VERBS_BASE, "name": NAMES, "place": PLACES, "prep": PREPOSITIONS, "time": TIME_WORDS,
        "onoff": ("on", "off"), "word": extra_words, "device": COMMAND_DEVICES, "opening": COMMAND_OPENINGS,
        "contact": COMMAND_CONTACTS, "updown": ("up", "down"),
    }
    if field == "digits":
        return _digits(rng)
    if field in ("minutes", "hour"):
        return str(rng.randint(1, 60 if field == "minutes" else 12))
    if field == "count":
        return str(rng.choice((rng.randint(2, 12), rng.randint(13, 99), rng.randint(100, 999))))
    return rng.choice(choices[field])


def generate_prompt(rng: random.Random, extra_words: Sequence[str] = ()) -> str:
    """One normalised sentence; with ``extra_words``, a fifth of prompts use one of them."""
    templates = _DICTIONARY_TEMPLATES if extra_words and rng.random() < 0.2 else _TEMPLATES
    template = rng.choice(templates)
    return normalize_text(_FIELD.sub(lambda m: _fill(m.group(1), rng, extra_words), template))


def digit_string(rng: random.Random) -> str:
    """One to seven digits spelled as words (``"three one four seven"``): the ``digits`` vocabulary."""
    return normalize_text(_digits(rng, 1, 7))


def command(rng: random.Random) -> str:
    """One normalised device command (``"turn on the lights"``): the ``commands`` vocabulary."""
    return normalize_text(_FIELD.sub(lambda m: _fill(m.group(1), rng, ()), rng.choice(_COMMAND_TEMPLATES)))


NARROW_VOCABULARIES: dict[str, Callable[[random.Random], str]] = {"digits": digit_string, "commands": command}


def word_sentence(rng: random.Random, words: Sequence[str], shortest: int = 4, longest: int = 8) -> str:
    """``shortest``-``longest`` words drawn uniformly from ``words``, as written (not normalised)."""
    return " ".join(rng.choice(words) for _ in range(rng.randint(shortest, longest)))
