"""The scripts in examples/ run as a newcomer runs them: ``python examples/NAME.py ...`` in a subprocess.

The device-side examples (personalise from a folder, live microphone) run on
the tiny exported test bundle with torchaudio, onnx and the trainer's modules
unimportable, as on a device; the microphone is a private PulseAudio null sink.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, skip_or_fail
from edgemeta.runtime.audio import read_audio
from edgemeta.benchmarks.virtual_microphone import VirtualMicrophoneError, play, virtual_microphone
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.manifest import read_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.profile_store import ProfileStore
from edgemeta.runtime.text import normalize_text
from edgemeta.synth import SynthesisError, require_engine
from export_fixtures import bundle_dir  # noqa: F401  (session fixture)
from runtime_helpers import TEXTS, runtime_env, speech, write_clip

EXAMPLES = REPO / "examples"
SCRIPTS = ("python_api_tour.py", "personalise_from_folder.py", "live_microphone.py")
USER = "sam"


def example(name: str, *args: str) -> list[str]:
    """The command line that runs ``examples/NAME`` with this interpreter."""
    return [sys.executable, str(EXAMPLES / name), *args]


@pytest.fixture(scope="module")
def enrolled(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:  # noqa: F811
    """``$EDGEMETA_HOME`` after ``personalise_from_folder.py`` enrolled USER, and that run."""
    folder = tmp_path_factory.mktemp("personalise")
    clips = folder / "clips"
    for index, (audio, text) in enumerate(zip(speech()[:4], TEXTS)):
        write_clip(clips, f"clip{index}.wav", audio, text, rate=22050)
    (clips / "broken.wav").write_bytes(b"RIFF....not audio")
    (clips / "broken.txt").write_text("hello\n", encoding="utf-8")
    test_file = write_clip(folder, "note.wav", speech()[4], None)
    home = folder / "home"
    command = example("personalise_from_folder.py", "--bundle", str(bundle_dir), "--user", USER,
                      "--enroll", str(clips), "--test", str(test_file))
    run = subprocess.run(command, env=runtime_env(folder, home), capture_output=True, text=True, timeout=120)
    return home, run


def printed_transcripts(stdout: str, head: str) -> dict[str, str]:
    """The tour's per-clip lines under the heading matching ``head``: clip name -> transcript, in printed order."""
    section = re.search(rf"^   (?:{head}):\n((?:     .*\n)*)", stdout, re.MULTILINE)
    assert section, stdout
    lines = (re.fullmatch(r"     (\S+): (.+)  \(reference .+\)", line) for line in section.group(1).splitlines())
    return {match.group(1): ast.literal_eval(match.group(2)) for match in lines}


def test_help_teaches_with_example_command_lines() -> None:
    """Every script's ``--help`` shows copyable ``python examples/NAME.py`` command lines."""
    runs = {name: subprocess.Popen(example(name, "--help"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in SCRIPTS}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "examples:" in stdout and f"python examples/{name}" in stdout, stdout


def test_python_api_tour(tmp_path: Path) -> None:
    """Synthesize, train a few steps, export, enroll a held-out speaker, print CER before and after."""
    try:
        require_engine("espeak-ng")
    except SynthesisError as error:
        skip_or_fail(str(error))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = tmp_path / "tour"
    command = example("python_api_tour.py", "--out", str(out), "--steps", "3", "--speakers", "1", "--clips", "3", "--k", "2")
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    clips = read_manifest(out / "corpus" / "manifest.jsonl")
    held_out = [c for c in clips if c.speaker == clips[-1].speaker][2:]  # the last speaker's clips after its k=2 enrollment clips
    references = [normalize_text(c.text) for c in held_out]
    for head, label in (("base head", "before"), (r"adapted head|base \(enrollment kept it\) head", "after")):
        transcripts = printed_transcripts(run.stdout, head)
        assert list(transcripts) == [c.audio.name for c in held_out], run.stdout
        printed = re.search(rf"^CER {label} enrollment: +(\d+\.\d{{3}})", run.stdout, re.MULTILINE)
        assert printed, run.stdout
        assert float(printed.group(1)) == pytest.approx(score(references, list(transcripts.values())).cer, abs=5e-4), run.stdout
    assert load_bundle(out / "bundle").inner_steps == 3
    assert (out / "train" / "last.pt").is_file()


def test_personalise_from_folder(enrolled: tuple[Path, subprocess.CompletedProcess], bundle_dir: Path) -> None:  # noqa: F811
    """Enrolls from a folder (an unreadable clip named and left out), saves the profile, transcribes with it."""
    home, run = enrolled
    assert run.returncode == 0, run.stderr
    assert "left out broken.wav: " in run.stdout
    assert "decision: " in run.stdout and "time: features" in run.stdout
    assert f"saved profile {USER} version 1" in run.stdout
    assert re.search(rf"^  {USER}: ", run.stdout, re.MULTILINE), run.stdout
    profile = ProfileStore(home).load(USER, load_bundle(bundle_dir).digest)
    assert [clip.name for clip in profile.clips] == [f"clip{i}.wav" for i in range(4)]


def test_live_microphone(enrolled: tuple[Path, subprocess.CompletedProcess], bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """A clip played into a virtual microphone comes out as a final transcript, with USER's head."""
    home, _ = enrolled
    clip = write_clip(tmp_path, "say.wav", speech()[1], None, rate=22050)
    try:
        with virtual_microphone(tmp_path / "vmic") as pulse:
            env = runtime_env(tmp_path, home, allow_sounddevice=True, base=pulse)
            command = example("live_microphone.py", "--bundle", str(bundle_dir), "--device", "pulse", "--seconds", "5", "--user", USER)
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                status = ""
                while "listening" not in status:  # PortAudio may print its own lines first
                    line = process.stderr.readline()
                    assert line, "the example exited before it listened: " + status + process.stderr.read()
                    status += line
                assert "listening on pulse" in status and "streaming graph" in status, status
                play(clip, pulse, read_audio(clip))
                stdout, stderr = process.communicate(timeout=60)
            finally:
                process.kill()
    except VirtualMicrophoneError as error:
        skip_or_fail(f"PulseAudio could not start: {error}")
    assert process.returncode == 0, stderr
    assert re.search(r"^final: ", stdout, re.MULTILINE), stdout + stderr
    assert "stopped after 5." in stderr
