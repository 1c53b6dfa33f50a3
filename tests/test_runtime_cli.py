"""``edgemeta-runtime``: the DESIGN.md contract, exit codes, and runs with torchaudio, onnx and the trainer unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemeta.runtime.bundle_format import FORMAT_VERSION
from edgemeta.runtime.cli import EXIT_BUNDLE, EXIT_INPUT, EXIT_MICROPHONE, EXIT_OK, EXIT_USAGE, build_parser, main
from edgemeta.runtime.profile_store import ProfileStore
from export_fixtures import bundle_dir, copy_bundle  # noqa: F401  (session fixture)
from runtime_helpers import TEXTS, run_runtime, runtime_env, speech, without_streaming, write_clip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$EDGEMETA_HOME`` for in-process runs."""
    monkeypatch.setenv("EDGEMETA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def clip_folder(folder: Path) -> Path:
    """Enrollment clips at 8, 16, 22.05 and 44.1 kHz, plus an unreadable file and one below 8 kHz."""
    for index, (audio, text) in enumerate(zip(speech(), TEXTS)):
        write_clip(folder, f"clip{index}.wav", audio, text, rate=(8000, 16000, 22050, 44100, 16000, 16000)[index])
    (folder / "broken.wav").write_bytes(b"RIFF....not really")
    (folder / "broken.txt").write_text("hello\n")
    write_clip(folder, "low-rate.wav", speech()[0], TEXTS[0], rate=6000)
    return folder


def test_help_teaches_with_examples() -> None:
    text = build_parser().format_help()
    for example in ("enroll --user alice --from clips/", "transcribe --jsonl", "listen --user alice", "profiles rollback alice"):
        assert example in text
    assert "exit codes" in text


def test_enroll_and_transcribe_without_torchaudio_onnx_trainer_or_portaudio(bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The device path in subprocesses where torchaudio, onnx, edgemeta's trainer and sounddevice cannot be imported."""
    env = runtime_env(tmp_path, tmp_path / "home")
    for forbidden in ("torchaudio", "onnx", "wordfreq", "edgemeta.model", "edgemeta.word_frequencies", "edgemeta.export.bundle_writer", "sounddevice"):
        probe = subprocess.run([sys.executable, "-c", f"import {forbidden}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "must not be imported" in probe.stderr, f"the blocker lets {forbidden} through"
    clips = clip_folder(tmp_path / "clips")
    enrolled = run_runtime(["--bundle", str(bundle_dir), "enroll", "--user", "erin", "--from", str(clips), "--json"], env)
    assert enrolled.returncode == EXIT_OK, enrolled.stderr
    report = json.loads(enrolled.stdout)
    assert report["clips_used"] == [f"clip{i}.wav" for i in range(6)], "every rate >= 8 kHz is resampled, never rejected"
    left_out = {c["clip"]: c["reason"] for c in report["clips_left_out"]}
    assert set(left_out) == {"broken.wav", "low-rate.wav"}
    assert "broken.wav: truncated" in left_out["broken.wav"]  # a RIFF header promising more than the file holds
    assert "below the 8000 Hz minimum" in left_out["low-rate.wav"]

    good = write_clip(tmp_path, "good.wav", speech()[1], None)
    second = write_clip(tmp_path, "second.flac", speech()[2], None)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    args = ["--bundle", str(bundle_dir), "transcribe", "--user", "erin", "--jsonl", str(good), "missing.wav", str(tmp_path / "bad.wav"), str(second)]
    result = run_runtime(args, env)
    assert result.returncode == EXIT_INPUT, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["audio"] for line in lines] == [str(good), "missing.wav", str(tmp_path / "bad.wav"), str(second)]
    assert set(lines[0]) == {"audio", "text"} and set(lines[3]) == {"audio", "text"}
    assert set(lines[1]) == {"audio", "error"} and "missing.wav" in lines[1]["error"]
    assert set(lines[2]) == {"audio", "error"} and "bad.wav" in lines[2]["error"]
    greedy = run_runtime(["--bundle", str(bundle_dir), "transcribe", "--greedy", "--jsonl", str(good)], env)
    assert greedy.returncode == EXIT_OK and set(json.loads(greedy.stdout)) == {"audio", "text"}, greedy.stderr
    digits = tmp_path / "digits.txt"
    digits.write_text("0 1 2 3 4 5 6 7 8 9\n", encoding="utf-8")

    # transcribing (base head or a user's) needs neither torch nor silero-vad: onnxruntime and numpy alone
    no_torch = runtime_env(tmp_path / "no-torch", tmp_path / "home", also_block=("torch", "silero_vad"))
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch, capture_output=True, text=True)
    assert probe.returncode != 0 and "must not be imported" in probe.stderr
    for user in ([], ["--user", "erin"]):
        light = run_runtime(["--bundle", str(bundle_dir), "transcribe", *user, "--jsonl", str(good), str(second)], no_torch)
        assert light.returncode == EXIT_OK, light.stderr
        light_lines = [json.loads(line) for line in light.stdout.splitlines()]
        assert [line["audio"] for line in light_lines] == [str(good), str(second)]
        if user:
            assert light_lines == [lines[0], lines[3]], "the same transcripts as in a process with torch loaded"
    # a word list, built on the device without torch: only its words come out
    listed = run_runtime(["--bundle", str(bundle_dir), "transcribe", "--words", str(digits), "--jsonl", str(good), str(second)], no_torch)
    assert listed.returncode == EXIT_OK, listed.stderr
    for line in map(json.loads, listed.stdout.splitlines()):
        assert set(line["text"].split()) <= set("zero one two three four five six seven eight nine".split()), line


def test_a_word_list_that_cannot_be_used_is_named(bundle_dir: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    clip = write_clip(tmp_path, "clip.wav", speech()[0], None)
    bundle = ["--bundle", str(bundle_dir)]
    assert main([*bundle, "transcribe", "--words", str(tmp_path / "absent.txt"), str(clip)]) == EXIT_INPUT
    assert "absent.txt: cannot read text" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("  ...\n", encoding="utf-8")
    assert main([*bundle, "transcribe", "--words", str(tmp_path / "empty.txt"), str(clip)]) == EXIT_INPUT
    assert "empty.txt: no words in it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*bundle, "transcribe", "--greedy", "--words", str(tmp_path / "empty.txt"), str(clip)])
    assert exited.value.code == EXIT_USAGE


def test_enroll_exit_codes(bundle_dir: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    bundle = ["--bundle", str(bundle_dir)]
    assert main([*bundle, "enroll", "--user", "a", "--from", str(tmp_path / "missing.jsonl")]) == EXIT_INPUT
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert main([*bundle, "enroll", "--user", "a", "--from", str(tmp_path / "bad.jsonl")]) == EXIT_INPUT
    assert main([*bundle, "enroll", "--user", "../a", "--from", str(tmp_path)]) == EXIT_USAGE
    assert main(["--bundle", str(tmp_path / "nowhere"), "enroll", "--user", "a", "--from", str(tmp_path)]) == EXIT_BUNDLE
    capsys.readouterr()

    # every clip left out: exit 0, the reason is said, and --user works with the base head
    silent = tmp_path / "silent"
    for index in range(2):
        write_clip(silent, f"s{index}.wav", np.zeros(16000, dtype=np.float32), "hello")
    manifest = tmp_path / "silent.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"silent/s{i}.wav", "text": "hello", "speaker": "x"}) + "\n" for i in range(2)))
    assert main([*bundle, "enroll", "--user", "quiet", "--from", str(manifest)]) == EXIT_OK
    err = capsys.readouterr().err
    assert "left out s0.wav: silent" in err and "no usable clips: keeping the base head" in err
    assert not ProfileStore(home).load("quiet").adapted
    assert main([*bundle, "transcribe", "--user", "quiet", str(silent / "s0.wav")]) == EXIT_OK

    # a guard refusal is exit 0 too (a folder the guard judges: the clips themselves are fine)
    assert main([*bundle, "enroll", "--user", "refused", "--from", str(clip_folder(tmp_path / "clips"))]) == EXIT_OK


def test_profiles_commands_and_another_bundle(bundle_dir: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    clips = clip_folder(tmp_path / "clips")
    wav = str(clips / "clip1.wav")
    bundle = ["--bundle", str(bundle_dir)]
    for _ in range(2):
        assert main([*bundle, "enroll", "--user", "fay", "--from", str(clips)]) == EXIT_OK
    capsys.readouterr()
    assert main(["profiles", "list"]) == EXIT_OK
    assert "fay\tversion 2" in capsys.readouterr().out
    assert main(["profiles", "show", "fay"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and len(shown["clips"]) == 6 and "guard" in shown["report"]
    assert main(["profiles", "rollback", "fay"]) == EXIT_OK
    assert ProfileStore(home).load("fay").version == 1

    other = ["--bundle", str(without_streaming(bundle_dir, tmp_path))]
    capsys.readouterr()
    assert main([*other, "transcribe", "--user", "fay", wav]) == EXIT_INPUT
    assert "made for another bundle" in capsys.readouterr().err
    assert main([*other, "profiles", "migrate"]) == EXIT_OK
    assert main([*other, "transcribe", "--user", "fay", wav]) == EXIT_OK
    assert main([*bundle, "transcribe", "--user", "fay", wav]) == EXIT_INPUT, "migrated: now bound to the other bundle"
    assert main(["profiles", "rollback", "fay"]) == EXIT_OK
    assert main([*bundle, "transcribe", "--user", "fay", wav]) == EXIT_OK

    assert main(["profiles", "delete", "fay"]) == EXIT_OK
    assert main(["profiles", "show", "fay"]) == EXIT_INPUT
    assert main(["profiles", "show", "../fay"]) == EXIT_USAGE


def test_a_tampered_profile_is_refused_by_transcribe(bundle_dir: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    clips = clip_folder(tmp_path / "clips")
    assert main(["--bundle", str(bundle_dir), "enroll", "--user", "gil", "--from", str(clips)]) == EXIT_OK
    store = ProfileStore(home)
    path = store.folder("gil") / store.version_file(store.pointer("gil")["current"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["--bundle", str(bundle_dir), "transcribe", "--user", "gil", str(clips / "clip0.wav")]) == EXIT_INPUT
    assert "modified or corrupted" in capsys.readouterr().err


def test_info_and_verify(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    assert main(["--bundle", str(bundle_dir), "info"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "head.output.weight" in out and "streaming     yes" in out
    assert "decoder       beam search, beam 8, language model lm.npz" in out and "test words" in out
    assert "adaptation    meta-sgd: up to 3 sgd steps, rates learned per parameter; enrollment starts from the base head" in out
    assert main(["--bundle", str(bundle_dir), "info", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["manifest"]["format_version"] == FORMAT_VERSION
    assert main(["--bundle", str(bundle_dir), "verify"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("ok:")
    broken = copy_bundle(bundle_dir, tmp_path)
    data = bytearray((broken / "head.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "head.pt").write_bytes(bytes(data))
    assert main(["--bundle", str(broken), "verify"]) == EXIT_BUNDLE
    assert "head.pt" in capsys.readouterr().err
    assert main(["verify", str(broken)]) == EXIT_BUNDLE, "BUNDLE may follow the command too"
    assert main(["info", str(bundle_dir)]) == EXIT_OK


def test_a_missing_microphone_is_a_clear_error(bundle_dir: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    assert main(["--bundle", str(bundle_dir), "listen", "--device", "no-such-microphone-here"]) == EXIT_MICROPHONE
    err = capsys.readouterr().err
    assert any(reason in err for reason in ("no input device 'no-such-microphone-here'", "no input device found", "PortAudio is not"))


def test_a_truncated_wav_is_an_error_for_transcribe_and_left_out_by_enroll(bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The first 60 bytes of a real clip: its RIFF header promises the whole clip (libsndfile alone reads 8 samples)."""
    command = [str(Path(sys.executable).with_name("edgemeta-runtime")), "--bundle", str(bundle_dir)]
    env = runtime_env(tmp_path, tmp_path / "home")
    clips = tmp_path / "clips"
    for index, (audio, text) in enumerate(zip(speech()[:3], TEXTS)):
        write_clip(clips, f"clip{index}.wav", audio, text)
    cut = clips / "cut.wav"
    cut.write_bytes((clips / "clip0.wav").read_bytes()[:60])
    cut.with_suffix(".txt").write_text(TEXTS[0] + "\n", encoding="utf-8")
    good = str(clips / "clip1.wav")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120)

    listed = run("transcribe", "--jsonl", good, str(cut), good)
    assert listed.returncode == EXIT_INPUT, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [line["audio"] for line in lines] == [good, str(cut), good]
    assert set(lines[0]) == set(lines[2]) == {"audio", "text"} and lines[0] == lines[2]
    assert set(lines[1]) == {"audio", "error"} and str(cut) in lines[1]["error"] and "truncated" in lines[1]["error"]
    plain = run("transcribe", str(cut))
    assert plain.returncode == EXIT_INPUT and plain.stdout == ""
    assert f"error: {cut}: truncated" in plain.stderr

    enrolled = run("enroll", "--user", "ivy", "--from", str(clips), "--json")
    assert enrolled.returncode == EXIT_OK, enrolled.stderr
    report = json.loads(enrolled.stdout)
    assert report["clips_used"] == ["clip0.wav", "clip1.wav", "clip2.wav"]
    assert [c["clip"] for c in report["clips_left_out"]] == ["cut.wav"] and "truncated" in report["clips_left_out"][0]["reason"]
    assert [c.name for c in ProfileStore(tmp_path / "home").load("ivy").clips] == ["clip0.wav", "clip1.wav", "clip2.wav"]


def test_enrollment_inputs_fail_loudly(bundle_dir: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    """Issue 31: each bad input is one clear line naming it, with the documented exit code, and nothing half-saved."""
    bundle = ["--bundle", str(bundle_dir)]
    store = ProfileStore(home)
    clip = write_clip(tmp_path, "clip.wav", speech()[0], None)

    # a single audio file given as --from: one line naming it and what is expected, exit 1, no profile
    assert main([*bundle, "enroll", "--user", "una", "--from", str(clip)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {clip}: an audio file, not a manifest; expected a JSONL manifest (.jsonl) "
                                        "or a folder of audio files with same-stem .txt transcripts (clip01.wav + clip01.txt)"]
    assert store.users() == []

    # an empty folder: an error naming it, exit 1, no profile
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*bundle, "enroll", "--user", "una", "--from", str(empty)]) == EXIT_INPUT
    assert f"error: {empty}: no audio files in this folder" in capsys.readouterr().err
    assert store.users() == []
    (tmp_path / "none.jsonl").write_text("\n")
    assert main([*bundle, "enroll", "--user", "una", "--from", str(tmp_path / "none.jsonl")]) == EXIT_INPUT
    assert "none.jsonl: no clips in this manifest" in capsys.readouterr().err
    assert store.users() == []

    # audio without a transcript and a 0-byte clip are named; the rest enrolls (exit 0)
    clips = tmp_path / "clips"
    for index, (audio, text) in enumerate(zip(speech()[:3], TEXTS)):
        write_clip(clips, f"clip{index}.wav", audio, text)
    write_clip(clips, "orphan.wav", speech()[3], None)
    (clips / "zero.wav").write_bytes(b"")
    (clips / "zero.txt").write_text("hello\n")
    assert main([*bundle, "enroll", "--user", "una", "--from", str(clips)]) == EXIT_OK
    err = capsys.readouterr().err
    assert "enrolling una: 3 readable clips" in err
    assert "left out orphan.wav: no orphan.txt transcript" in err
    assert f"left out zero.wav: {clips / 'zero.wav'}: empty file (0 bytes)" in err
    assert [c.name for c in store.load("una").clips] == ["clip0.wav", "clip1.wav", "clip2.wav"]

    # transcribe: a directory and an empty file are said as such
    assert main([*bundle, "transcribe", str(clips)]) == EXIT_INPUT
    assert f"error: {clips}: is a directory; pass audio files (e.g. {clips}/*.wav)" in capsys.readouterr().err
    assert main([*bundle, "transcribe", str(clips / "zero.wav")]) == EXIT_INPUT
    assert f"error: {clips / 'zero.wav'}: empty file (0 bytes)" in capsys.readouterr().err

    # a user never enrolled: how to enroll
    assert main([*bundle, "transcribe", "--user", "nobody", str(clip)]) == EXIT_INPUT
    assert "nobody: no profile (" in (err := capsys.readouterr().err)
    assert "enroll first: edgemeta-runtime enroll --user nobody --from CLIPS/" in err

    # an option of edgemeta-runtime itself after the command: where it goes
    for argv, hint in (
        (["transcribe", "--bundle", "X", str(clip)], "--bundle goes before the command: edgemeta-runtime --bundle X transcribe ..."),
        ([*bundle, "enroll", "--user", "una", "--threads=2"], "--threads goes before the command: edgemeta-runtime --threads 2 enroll ..."),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == EXIT_USAGE and hint in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the hint looks only after the command: an option before it is fine, a file named X too
        main([*bundle, "transcribe", "--help"])
    capsys.readouterr()


def test_a_single_audio_file_as_manifest_is_one_line_without_traceback(tmp_path: Path) -> None:
    """Through the installed command: no traceback, one line, exit 1."""
    clip = write_clip(tmp_path, "clip.wav", speech()[0], None)
    result = run_runtime(["enroll", "--user", "una", "--from", str(clip)], runtime_env(tmp_path, tmp_path / "home"))
    assert result.returncode == EXIT_INPUT
    assert result.stderr.splitlines() == [f"error: {clip}: an audio file, not a manifest; expected a JSONL manifest (.jsonl) "
                                          "or a folder of audio files with same-stem .txt transcripts (clip01.wav + clip01.txt)"]
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.json"))
