"""Beam search against brute force, the character language model, and a bundle that decodes with one."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from edgemeta.runtime.language_model import build_char_ngram, text_counts
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.ctc_decode import BeamSearch, greedy_decode, word_list_search
from edgemeta.runtime.language_model import SYMBOLS, CharNgram, LanguageModelError
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import VOCABULARY
from export_fixtures import bundle_dir, one_torch_thread  # noqa: F401 (fixtures)

WORDS = text_counts(["the cat sat on the mat", "the dog", "that is the thing", "then the end"])


def scores(rows: list[dict[str, float]]) -> np.ndarray:
    """``[frames, vocabulary]`` log-probabilities from per-frame {symbol: probability}; unlisted symbols get none."""
    out = np.full((len(rows), len(VOCABULARY)), -np.inf)
    for frame, row in zip(out, rows):
        for symbol, p in row.items():
            frame[VOCABULARY.index(symbol)] = math.log(p)
    return out


def brute_force_best(log_probs: np.ndarray, symbols: list[int], score: Callable[[str], float] = lambda text: 0.0,
                     prune: float = -math.inf, listed: frozenset[str] | None = None) -> str:
    """The labelling with the highest log total probability over every CTC path through ``symbols``, plus ``score(labelling)``.

    A path may not go through an output below ``prune`` in its frame unless it is the frame's best; a
    labelling never starts with or doubles a space (such a space joins the labelling before it). With
    ``listed``, only labellings made of those words compete.
    """
    allowed = [[s for s in symbols if row[s] >= min(prune, row.max())] for row in log_probs]
    totals: dict[str, float] = {}
    for path in itertools.product(*allowed):
        p = math.exp(sum(log_probs[t, s] for t, s in enumerate(path)))
        text = "".join(VOCABULARY[s] for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s))
        text = re.sub(" +", " ", text).lstrip(" ")
        totals[text] = totals.get(text, 0.0) + p
    if listed is not None:
        totals = {text: p for text, p in totals.items() if set(text.split()) <= listed}
    return max(totals, key=lambda text: math.log(totals[text]) + score(text)).strip()


def word_log_prob(model: CharNgram, word: str) -> float:
    """Log-probability of ``word`` as a whole word under ``model`` (its letters, then the space that ends it)."""
    history, total = " ", 0.0
    for ch in word + " ":
        total += float(model.next_log_probs(history)[SYMBOLS.index(ch)])
        history += ch
    return total


def fused_score(model: CharNgram, lm_weight: float, char_bonus: float) -> Callable[[str], float]:
    """What the beam search adds to a labelling's CTC log-probability, computed word by word."""
    return lambda text: lm_weight * sum(word_log_prob(model, word) for word in text.split()) + char_bonus * len(text.replace(" ", ""))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lm_weight,char_bonus,prune", [(0.0, 0.0, -math.inf), (0.7, 1.5, -math.inf), (1.0, -0.5, -math.inf), (0.7, 1.5, -1.5)])
def test_a_beam_wide_enough_for_every_prefix_finds_the_best_scoring_labelling(seed: int, lm_weight: float, char_bonus: float, prune: float) -> None:
    rng = np.random.default_rng(seed)
    symbols = [0, VOCABULARY.index(" "), VOCABULARY.index("a"), VOCABULARY.index("t")]
    logits = rng.normal(0, 2.5, (6, len(symbols)))
    log_probs = np.full((6, len(VOCABULARY)), -np.inf)
    log_probs[:, symbols] = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    model = build_char_ngram(WORDS + text_counts(["a tat at a", "at a"]))
    search = BeamSearch(model, lm_weight=lm_weight, char_bonus=char_bonus, beam=len(symbols) ** 6, prune=prune)
    assert search(log_probs) == brute_force_best(log_probs, symbols, fused_score(model, lm_weight, char_bonus), prune)


@pytest.mark.parametrize("seed", range(6))
def test_a_word_list_search_wide_enough_for_every_prefix_finds_the_best_listed_labelling(seed: int) -> None:
    """A closed vocabulary restricts which labellings compete, never the paths that sum into one (a held letter included)."""
    rng = np.random.default_rng(seed)
    symbols = [0, VOCABULARY.index(" "), VOCABULARY.index("a"), VOCABULARY.index("t")]
    logits = rng.normal(0, 2.5, (6, len(symbols)))
    log_probs = np.full((6, len(VOCABULARY)), -np.inf)
    log_probs[:, symbols] = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    listed = text_counts(["a", "at at", "tat"])
    model = build_char_ngram(listed)
    search = BeamSearch(model, lm_weight=0.5, char_bonus=1.0, beam=len(symbols) ** 6, prune=-math.inf, words=frozenset(listed))
    assert search(log_probs) == brute_force_best(log_probs, symbols, fused_score(model, 0.5, 1.0), listed=frozenset(listed))


def test_a_letter_held_over_frames_stays_a_listed_word() -> None:
    assert word_list_search({"a": 1})(scores([{"a": 1.0}, {"a": 1.0}])) == "a"
    assert word_list_search({"two": 1})(scores([{"t": 1.0}, {"t": 1.0}, {"w": 1.0}, {"o": 1.0}, {"o": 1.0}])) == "two"


def test_best_path_and_beam_search_differ_where_paths_add_up() -> None:
    # the best single path is blank-blank ("" ), but "a" collects more probability over its paths
    log_probs = scores([{"<blank>": 0.6, "a": 0.4}, {"<blank>": 0.6, "a": 0.4}])
    assert greedy_decode(log_probs) == ""
    assert BeamSearch(build_char_ngram(WORDS), lm_weight=0.0, char_bonus=0.0)(log_probs) == "a"


def test_the_language_model_corrects_a_spelling_the_audio_leaves_open() -> None:
    frames = [{"t": 1.0}, {"<blank>": 1.0}, {"h": 1.0}, {"<blank>": 1.0}, {"a": 0.55, "e": 0.45}, {"<blank>": 1.0}]
    log_probs = scores(frames)
    assert greedy_decode(log_probs) == "tha"
    assert BeamSearch(build_char_ngram(WORDS), lm_weight=1.0, char_bonus=0.0)(log_probs) == "the"
    assert BeamSearch(build_char_ngram(WORDS), lm_weight=0.0, char_bonus=0.0)(log_probs) == "tha"


def test_spaces_are_never_doubled_or_leading() -> None:
    frames = [{" ": 1.0}, {"a": 1.0}, {" ": 1.0}, {"<blank>": 1.0}, {" ": 1.0}, {"b": 1.0}]
    assert BeamSearch(build_char_ngram(WORDS), lm_weight=0.0, char_bonus=0.0)(scores(frames)) == "a b"


def test_every_history_is_a_distribution_and_frequent_spellings_win(tmp_path: Path) -> None:
    model = build_char_ngram(WORDS, order=4, min_count=1.0)
    np.testing.assert_allclose(np.exp(model.table).sum(1), 1.0, rtol=1e-5)
    assert model.order == 4 and "" in model.histories
    assert word_log_prob(model, "the") > word_log_prob(model, "teh")
    assert math.isfinite(word_log_prob(model, "zzz'q"))  # unseen spellings keep some probability
    model.save(tmp_path / "lm.npz")
    loaded = CharNgram.load(tmp_path / "lm.npz")
    assert loaded.histories == model.histories and loaded.order == 4
    np.testing.assert_allclose(np.exp(loaded.table).sum(1), 1.0, atol=2e-3)  # stored as float16
    # a pruned history backs off to its longest kept suffix
    pruned = build_char_ngram(WORDS, order=4, min_count=3.0)
    assert " ca" not in pruned.histories and "a" in pruned.histories
    np.testing.assert_array_equal(pruned.next_log_probs(" ca"), pruned.next_log_probs("a"))
    assert len(SYMBOLS) == model.table.shape[1]


def test_a_bad_language_model_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "lm.npz"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(LanguageModelError, match="lm.npz: not a character language model"):
        CharNgram.load(bad)
    with pytest.raises(LanguageModelError, match="missing.npz"):
        CharNgram.load(tmp_path / "missing.npz")


def test_a_bundle_with_a_language_model_decodes_with_it(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    settings = bundle.decoder_settings
    assert settings is not None and settings["file"] == "lm.npz" and settings["source"] == "test words"
    assert isinstance(bundle.decoder(), BeamSearch) and bundle.decoder(greedy=True) is greedy_decode
    audio = [np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)]
    recognizer = Recognizer(bundle)
    log_probs = recognizer.infer(audio)[0].log_probs
    assert recognizer.transcribe(audio)[0].text == bundle.decoder()(log_probs)
    assert Recognizer(bundle, greedy=True).transcribe(audio)[0].text == greedy_decode(log_probs)


def test_lm_command_builds_from_text_and_names_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from edgemeta.cli import main

    text = tmp_path / "commands.txt"
    text.write_text("Turn on the light.\nTurn off the light!\nCall Mum at 7\n", encoding="utf-8")
    out = tmp_path / "lm" / "mine.npz"
    assert main(["lm", "--text", str(text), "--order", "4", "--out", str(out)]) == 0
    model = CharNgram.load(out)
    assert model.order == 4 and model.source == "word counts of commands.txt"
    assert word_log_prob(model, "light") > word_log_prob(model, "lihgt")
    assert word_log_prob(model, "seven") > word_log_prob(model, "sevn"), "digits are spelled out as transcripts are"
    assert main(["lm", "--text", str(tmp_path / "absent.txt"), "--out", str(out)]) == 2
    assert "absent.txt" in capsys.readouterr().err


def test_nan_scores_decode_like_best_path() -> None:
    log_probs = np.full((5, len(VOCABULARY)), np.nan)
    assert BeamSearch(build_char_ngram(WORDS))(log_probs) == greedy_decode(log_probs)


def test_a_word_list_keeps_transcripts_to_its_words() -> None:
    frames = [{"t": 1.0}, {"<blank>": 1.0}, {"h": 1.0}, {"<blank>": 1.0}, {"a": 0.9, "e": 0.1}, {" ": 1.0}, {"c": 0.7, "x": 0.3}, {"a": 1.0}, {"t": 1.0}]
    open_search = BeamSearch(build_char_ngram(WORDS), lm_weight=0.0, char_bonus=0.0)
    assert open_search(scores(frames)) == "tha cat"
    words = text_counts(["the cat", "a dog"])
    assert word_list_search(words)(scores(frames)) == "the cat"
    # audio that fits no listed word well still gives listed words (or nothing), never a spelling of its own
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(0, 2.0, (30, len(VOCABULARY)))
        log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        text = word_list_search(words)(log_probs)
        assert set(text.split()) <= set(words), text
        assert set(open_search(log_probs).split()) - set(words), "the unconstrained search spells words of its own here"
