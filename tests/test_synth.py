"""Synthetic corpus: speaker ids, determinism, manifest, flite kept for evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import skip_or_fail
from edgemeta.cli import build_parser
from edgemeta.prompts import generate_prompt
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.manifest import read_manifest
from edgemeta.runtime.text import normalize_text
from edgemeta.synth import SynthesisError, VoiceSpec, _speaker_job, sample_speakers, synthesize, synthesize_corpus


def require(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            skip_or_fail(f"{program} is not installed (Debian package needed for synthesis)")


def test_a_speakers_prompts_are_normalised_varied_and_drawn_from_the_seed_and_its_id(tmp_path: Path) -> None:
    """What synthesize_corpus has one open-vocabulary speaker read (nothing is synthesized)."""
    def prompts_of(speaker: str, seed: int = 3, index: int = 0) -> list[str]:
        voice = VoiceSpec("espeak-ng", "en-us")
        return _speaker_job(tmp_path, seed, index, speaker, voice, 200, False, generate_prompt, {}).texts

    prompts = prompts_of("a")
    assert prompts == prompts_of("a", index=7), "a speaker reads the same prompts wherever it stands in the corpus"
    assert prompts != prompts_of("b") and prompts != prompts_of("a", seed=4)
    assert all(p == normalize_text(p) and p for p in prompts)
    assert len(set(prompts)) > 190
    assert any(word in " ".join(prompts).split() for word in ("five", "seven", "nine"))


def test_speaker_ids_are_distinct_and_stable() -> None:
    require("espeak-ng", "festival")
    speakers = sample_speakers(40, seed=0)
    ids = [s.speaker_id for s in speakers]
    assert len(set(ids)) == 40
    assert ids == [s.speaker_id for s in sample_speakers(40, seed=0)]
    assert {s.engine for s in speakers} == {"espeak-ng", "festival"}
    assert VoiceSpec("espeak-ng", "en-us", 40, 160, "m3").speaker_id == "espeak-en-us+m3-p40-s160"
    assert VoiceSpec("festival", "kal_diphone", 105, 1.1).speaker_id == "festival-kal-p105-s1.1"
    assert VoiceSpec("festival", "cmu_us_slt_arctic_hts", None, 0.9).speaker_id == "festival-slt-s0.9"
    assert VoiceSpec("flite", "rms").speaker_id == "flite-rms"


def test_flite_is_used_only_when_asked_for() -> None:
    require("espeak-ng", "festival", "flite")
    assert all(s.engine != "flite" for s in sample_speakers(60, seed=1))
    assert [s.speaker_id for s in sample_speakers(2, seed=0, engines=("flite",))] == ["flite-rms", "flite-awb"]
    args = build_parser().parse_args(["synth", "--out", "x"])
    assert args.engines is None and args.func.__module__ == "edgemeta.synth"
    assert build_parser().parse_args(["synth", "--out", "x", "--engine", "flite"]).engines == ["flite"]


def test_unknown_engine_is_named() -> None:
    with pytest.raises(SynthesisError, match="unknown synthesis engine 'sapi'"):
        sample_speakers(2, seed=0, engines=("sapi",))


def test_synthesize_speaks_at_16_khz_and_rate_changes_duration() -> None:
    require("espeak-ng")
    slow = synthesize("set a timer for ten minutes", VoiceSpec("espeak-ng", "en-gb", 50, 130, "m3"))
    fast = synthesize("set a timer for ten minutes", VoiceSpec("espeak-ng", "en-gb", 50, 190, "m3"))
    assert slow.dtype == np.float32 and slow.ndim == 1
    assert 1.0 < slow.size / SAMPLE_RATE < 5.0
    assert fast.size < 0.85 * slow.size


def test_corpus_is_deterministic_and_readable(tmp_path: Path) -> None:
    require("espeak-ng", "festival")
    first = synthesize_corpus(tmp_path / "a", speakers=5, clips=2, seed=11, workers=2)
    second = synthesize_corpus(tmp_path / "b", speakers=5, clips=2, seed=11, workers=2)
    clips_a, clips_b = read_manifest(first), read_manifest(second)
    assert first.read_text() == second.read_text()
    assert len(clips_a) == 10 and len({c.speaker for c in clips_a}) == 5
    assert {c.extra["engine"] for c in clips_a} == {"espeak-ng", "festival"}
    assert all(set(c.extra) == {"engine", "voice", "condition", "language"} and c.extra["language"] == "en" for c in clips_a)
    for clip_a, clip_b in zip(clips_a, clips_b):
        audio_a, rate = soundfile.read(clip_a.audio, dtype="float32")
        audio_b, _ = soundfile.read(clip_b.audio, dtype="float32")
        assert rate == SAMPLE_RATE and audio_a.size > SAMPLE_RATE // 2
        np.testing.assert_array_equal(audio_a, audio_b)
        assert np.abs(audio_a).max() < 1.0
        assert clip_a.text == normalize_text(clip_a.text)


def test_flite_evaluation_set_without_effects(tmp_path: Path) -> None:
    require("flite")
    manifest = synthesize_corpus(tmp_path, speakers=2, clips=1, seed=0, engines=("flite",), conditions=False)
    clips = read_manifest(manifest)
    assert sorted(c.speaker for c in clips) == ["flite-awb", "flite-rms"]
    assert all(c.extra["condition"] is None for c in clips)


def test_unseen_speakers_share_no_variant_with_a_models_training_speakers(tmp_path: Path) -> None:
    require("espeak-ng")
    from edgemeta.checkpoint import save_checkpoint
    from edgemeta.synth import speaker_variant, trained_variants

    assert speaker_variant("espeak-en-gb-x-rp+RicishayMax3-p55-s180") == "RicishayMax3"
    assert speaker_variant("festival-kal-p105-s1.1") is None
    # A model's training speakers as a checkpoint records them: 40 espeak-ng speakers (seed 1), a festival one, a real one.
    speakers = [s.speaker_id for s in sample_speakers(40, seed=1, engines=("espeak-ng",))] + ["festival-kal-p105-s1.1", "so762-0005"]
    save_checkpoint(tmp_path / "model.pt", {"training_speakers": speakers})
    trained = trained_variants(tmp_path / "model.pt")
    assert trained == {speaker_variant(s) for s in speakers[:40]}
    unseen = sample_speakers(40, seed=2, engines=("espeak-ng",), excluded_variants=trained)
    assert len({s.speaker_id for s in unseen}) == 40
    assert not {s.variant for s in unseen} & trained
    # without the exclusion the same draw does hit trained variants: the exclusion is what separates them
    assert {s.variant for s in sample_speakers(40, seed=2, engines=("espeak-ng",))} & trained


def test_unseen_by_a_missing_model_is_named(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["synth", "--out", str(tmp_path / "out"), "--unseen-by", str(tmp_path / "nope.pt")])
    assert args.func(args) == 1
    assert "nope.pt" in capsys.readouterr().err
