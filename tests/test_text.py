from edgemeta.runtime.ctc_decode import greedy_decode
from edgemeta.runtime.metrics import edit_distance, score
from edgemeta.runtime.text import VOCABULARY, encode, normalize_text, number_to_words

import numpy as np
import pytest


def test_vocabulary_is_blank_space_letters_apostrophe():
    assert VOCABULARY[0] == "<blank>" and VOCABULARY[1] == " " and VOCABULARY[-1] == "'"
    assert "".join(VOCABULARY[2:28]) == "abcdefghijklmnopqrstuvwxyz" and len(VOCABULARY) == 29


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("It's 42 degrees", "it's forty two degrees"),
    ("Call 911 now", "call nine hundred eleven now"),
    ("3.5 kg & 10%", "three point five kg and ten percent"),
    ("Café déjà-vu", "cafe deja vu"),
    ("1,000,000", "one million"),
    ("  tabs\tand\nlines  ", "tabs and lines"),
    ("WE CALL IT BEAR", "we call it bear"),
    ("don’t", "don't"),
    ("2025", "two thousand twenty five"),
    ("@#$", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Straße", "strasse"),
    ("smørrebrød og æbler", "smorrebrod og aebler"),
    ("Łódź był cœur", "lodz byl coeur"),
    ("ÞAÐ ĐAK ılık İstanbul", "thad dak ilik istanbul"),
    ("señor não können", "senor nao konnen"),
])
def test_letters_of_latin_script_languages_fold_to_their_ascii_spelling(raw, expected):
    """Accents are dropped, and letters without a decomposition (ß, ø, ł, ı, ...) are spelled, never dropped."""
    assert normalize_text(raw) == expected


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(1_234_567) == "one million two hundred thirty four thousand five hundred sixty seven"


def test_encoded_targets_are_what_best_path_decoding_reads_back_and_unknown_characters_are_refused():
    ids = encode("it's ok")
    assert ids == [10, 21, 28, 20, 1, 16, 12]  # blank 0, space 1, a-z 2-27 (i: 10), apostrophe 28
    scores = np.full((len(ids), len(VOCABULARY)), -10.0)
    scores[np.arange(len(ids)), ids] = 0.0
    assert greedy_decode(scores) == "it's ok"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("Upper")


def test_greedy_decode_collapses_repeats_and_blanks():
    # frames: h h <b> e l <b> l l o -> "hello"
    ids = [encode("h")[0]] * 2 + [0] + encode("el") + [0] + encode("l") * 2 + encode("o")
    scores = np.full((len(ids), len(VOCABULARY)), -10.0)
    scores[np.arange(len(ids)), ids] = 0.0
    assert greedy_decode(scores) == "hello"
    assert greedy_decode(scores, length=3) == "h"


def test_edit_distance_hand_worked():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def test_cer_wer_hand_worked():
    one = score(["abcd"], ["abed"])  # 1 substitution in 4 characters, 1 word wrong of 1
    assert one.cer == pytest.approx(0.25) and one.wer == 1.0
    assert score(["the cat sat"], ["the bat sat down"]).wer == pytest.approx(2 / 3)
    counts = score(["ab", "cdef"], ["ab", "cxef"])  # corpus level: 1 edit / 6 chars
    assert counts.cer == pytest.approx(1 / 6) and counts.wer == pytest.approx(1 / 2)
    with pytest.raises(ValueError):
        score(["a"], [])
