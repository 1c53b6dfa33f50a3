"""Mismatch tasks as corpora: espeak-ng speakers of other languages, narrow vocabularies, and the languages runs record."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import TINY_CONFIG
from edgemeta.checkpoint import load_checkpoint, new_checkpoint
from edgemeta.cli import main
from edgemeta.corpus import clip_language, corpus_languages, load_corpus
from edgemeta.meta_train import meta_train
from edgemeta.model import SpeechRecognizer
from edgemeta.prompts import command
from edgemeta.runtime.manifest import read_manifest
from edgemeta.runtime.text import encode, normalize_text, number_to_words
from edgemeta.speaker_tasks import speaker_tasks
from edgemeta.splits import LANGUAGE_PARTS, language_split, select_languages
from edgemeta.synth import language_speakers, synthesize_corpus, synthesize_language_corpus
from edgemeta.train import TrainConfig, train
from edgemeta.word_frequencies import common_words
from test_meta_learning import single_thread, utterances  # noqa: F401 (single_thread: autouse fixture)
from test_meta_train import tiny_config
from test_synth import require

DIGIT_WORDS = {number_to_words(d) for d in range(10)}


def _words_fold_into_the_vocabulary(text: str) -> bool:
    return bool(text) and text == normalize_text(text) and encode(text) is not None and any(c.isalpha() for c in text)


def test_language_split_is_disjoint_and_keeps_test_languages_out_of_training() -> None:
    split = language_split()
    languages = [code for part in LANGUAGE_PARTS for code in split[part]]
    assert len(languages) == len(set(languages)) >= 21 and "en" not in languages
    assert {"es", "de"} <= set(split["dev"]) and len(split["test"]) >= 3
    assert select_languages("dev") == split["dev"] and select_languages("pl, es,pl") == ["pl", "es"]
    with pytest.raises(ValueError, match="unknown language xx"):
        select_languages("es,xx")
    # speakers of the three parts never meet: a speaker id carries its language
    require("espeak-ng")
    ids = {part: {v.speaker_id for v in language_speakers(split[part], 3, seed=0)} for part in LANGUAGE_PARTS}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert all(len(ids[part]) == 3 * len(split[part]) for part in LANGUAGE_PARTS)


@pytest.mark.parametrize("language", [code for part in LANGUAGE_PARTS for code in language_split()[part]])
def test_every_split_language_has_common_words_that_fold_into_the_vocabulary(language: str) -> None:
    words = common_words(language)
    assert len(words) > 1900
    assert all(_words_fold_into_the_vocabulary(normalize_text(w)) for w in words)


def test_language_corpus_is_folded_labelled_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("espeak-ng")
    first = synthesize_language_corpus(tmp_path / "a", ["pl", "es"], speakers_per_language=1, clips=3, seed=5, conditions=False)
    again = synthesize_language_corpus(tmp_path / "b", ["pl", "es"], speakers_per_language=1, clips=3, seed=5, conditions=False)
    other = synthesize_language_corpus(tmp_path / "c", ["es"], speakers_per_language=1, clips=3, seed=6, conditions=False)
    assert first.read_text() == again.read_text()
    assert first.read_text() != other.read_text()
    clips = read_manifest(first)
    assert len(clips) == 6 and {c.extra["language"] for c in clips} == {"pl", "es"}
    for clip in clips:
        assert clip.speaker.startswith(f"espeak-{clip.extra['language']}+")
        assert _words_fold_into_the_vocabulary(clip.text) and len(clip.text.split()) >= 4
        audio, rate = soundfile.read(clip.audio, dtype="float32")
        assert rate == 16000 and audio.size > 8000
    # a language's speakers are the same whichever other languages are asked for
    alone = read_manifest(synthesize_language_corpus(tmp_path / "d", ["es"], speakers_per_language=1, clips=3, seed=5, conditions=False))
    assert [(c.speaker, c.text) for c in alone] == [(c.speaker, c.text) for c in clips if c.extra["language"] == "es"]
    # the language survives into the utterances a run trains on
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loaded = load_corpus(first, progress=False)
    assert {(u.speaker.split("+")[0], u.language) for u in loaded} == {("espeak-pl", "pl"), ("espeak-es", "es")}
    assert corpus_languages(loaded) == ["es", "pl"]


def test_digit_speakers_read_only_digit_strings(tmp_path: Path) -> None:
    require("espeak-ng")
    clips = read_manifest(synthesize_corpus(tmp_path, speakers=2, clips=4, seed=0, engines=("espeak-ng",), conditions=False,
                                            vocabulary="digits"))
    assert len(clips) == 8 and len({c.speaker for c in clips}) == 2
    assert all(c.speaker.endswith("-digits") and c.extra["vocabulary"] == "digits" and c.extra["language"] == "en" for c in clips)
    assert all(set(c.text.split()) <= DIGIT_WORDS and 1 <= len(c.text.split()) <= 7 for c in clips)


def test_commands_are_a_narrow_vocabulary() -> None:
    rng = random.Random(0)
    prompts = [command(rng) for _ in range(500)]
    assert all(_words_fold_into_the_vocabulary(p) for p in prompts)
    assert len({w for p in prompts for w in p.split()}) < 100 and len(set(prompts)) > 50


def test_command_line_writes_a_language_corpus_and_refuses_unknown_languages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    require("espeak-ng")
    assert main(["synth", "--out", str(tmp_path), "--languages", "es,fr", "--speakers-per-language", "1", "--clips", "2"]) == 0
    assert {c.extra["language"] for c in read_manifest(tmp_path / "manifest.jsonl")} == {"es", "fr"}
    assert main(["synth", "--out", str(tmp_path / "x"), "--languages", "klingon"]) == 1
    assert "unknown language klingon" in capsys.readouterr().err


def test_corpus_languages_default_to_english(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [{"audio": "a.wav", "text": "a"}, {"audio": "b.wav", "text": "b", "language": "sv"}]))
    assert sorted({clip_language(clip) for clip in read_manifest(manifest)}) == ["en", "sv"]
    assert corpus_languages(utterances("s", 2)) == ["en"]


def test_meta_training_records_the_languages_it_used(tiny_model: SpeechRecognizer, tmp_path: Path) -> None:
    clips = [replace(u, language=language) for s, language in enumerate(["pl", "fr", "pl"]) for u in utterances(f"t{s}", 6, seed=s)]
    init = new_checkpoint(tiny_model, "pretrained", 3, ["pretrain-speaker"], provenance={"languages": ["en", "sv"]})
    checkpoint = meta_train(tiny_config(tmp_path, max_steps=1), init, speaker_tasks(clips, 6), [], progress=False)
    assert checkpoint["provenance"]["languages"] == ["en", "fr", "pl", "sv"]


def test_pretraining_records_the_languages_it_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    lines = []
    for i, language in enumerate(["fi", "fi", None, "lt"]):
        soundfile.write(tmp_path / f"{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        lines.append(json.dumps({"audio": f"{i}.wav", "text": "ab", "speaker": "s", **({"language": language} if language else {})}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    config = TrainConfig(manifests=[str(tmp_path / "manifest.jsonl")], speechocean=False, out=str(tmp_path / "run"), max_steps=1,
                         threads=1, model=dict(TINY_CONFIG))
    assert load_checkpoint(train(config, progress=False))["provenance"]["languages"] == ["en", "fi", "lt"]
