"""The real audio path: a PulseAudio null sink as the microphone, PortAudio/sounddevice recording its monitor.

``listen`` (with a streaming graph, and with a whisper body that has none) and
microphone ``enroll`` run as ``edgemeta-runtime`` subprocesses
with torchaudio, onnx and the trainer unimportable; clips are played into the
virtual microphone with ``paplay``. Skipped (failed with CI=true) only when
PulseAudio cannot start.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import skip_or_fail
from edgemeta.runtime.audio import read_audio
from edgemeta.benchmarks.virtual_microphone import ListenProcess, VirtualMicrophoneError, play, virtual_microphone
from edgemeta.export import parity
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.cli import EXIT_OK, main
from edgemeta.runtime.metrics import score
from edgemeta.runtime.profile_store import Profile, ProfileStore
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.synth import synthesize
from export_fixtures import bundle_dir, whisper_bundle_dir, whisper_checkpoint  # noqa: F401  (session fixtures)
from runtime_helpers import ESPEAK, TEXTS, run_runtime, runtime_env, speech, write_clip

LIVE_VS_FILE_CER = 0.5  # live and file transcripts of the same clip differ by resampling path and endpoints only


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of subprocesses that record from the virtual microphone (torchaudio, onnx, trainer blocked)."""
    folder = tmp_path_factory.mktemp("vmic")
    try:
        with virtual_microphone(folder) as env:
            yield runtime_env(folder, folder / "home", allow_sounddevice=True, base=env)
    except VirtualMicrophoneError as error:
        skip_or_fail(f"PulseAudio could not start: {error}")


@pytest.fixture(scope="module")
def pulse_index(microphone: dict[str, str]) -> str:
    """PortAudio's index of the ``pulse`` input device, as ``edgemeta-runtime devices`` lists it."""
    result = run_runtime(["devices"], microphone, timeout=60)
    assert result.returncode == EXIT_OK, result.stderr
    found = re.search(r"^\S?\s+(\d+)\s+pulse\s", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return found.group(1)


def test_listen_transcribes_the_microphone_like_the_file(bundle_dir: Path, microphone: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Live finals through PulseAudio -> PortAudio -> resampler -> VAD -> streaming graph, with a user's head; no torch."""
    monkeypatch.setenv("EDGEMETA_HOME", microphone["EDGEMETA_HOME"])
    clips = tmp_path / "enroll"
    for index, (audio, text) in enumerate(zip(speech(), TEXTS)):
        write_clip(clips, f"c{index}.wav", audio, text)
    assert main(["--bundle", str(bundle_dir), "enroll", "--user", "lou", "--from", str(clips)]) == EXIT_OK
    head = ProfileStore().load("lou").weights
    files = [write_clip(tmp_path, f"say{i}.wav", speech()[i], None, rate=22050) for i in (1, 3)]

    without_torch = runtime_env(tmp_path / "no-torch", Path(microphone["EDGEMETA_HOME"]), allow_sounddevice=True, base=microphone,
                                also_block=("torch",))
    listen = ListenProcess(bundle_dir, without_torch, user="lou")
    try:
        heard = []
        for path in files:
            audio = read_audio(path)
            speech_over = play(path, microphone, audio)
            finals = listen.finals()
            assert finals, "no final transcript for " + path.name + "".join(listen.stderr)
            heard.append((" ".join(text for _, text in finals), finals[-1][0] - speech_over))
    finally:
        assert listen.stop() == EXIT_OK, "".join(listen.stderr)
    assert "listening on pulse (44100 Hz -> 16000 Hz, streaming graph)" in "".join(listen.stderr)
    recognizer = Recognizer(load_bundle(bundle_dir), head)
    for path, (live_text, latency) in zip(files, heard):
        file_text = recognizer.transcribe_files([path])[0].text
        print(f"{path.name}: live {live_text!r} file {file_text!r} latency {latency:.3f} s")
        # Latency and input overflows depend on the machine's load: the device benchmark measures them
        # (edgemeta/benchmarks/device_runtime.py); audio lost to an overflow shows here as CER.
        assert score([file_text], [live_text]).cer <= LIVE_VS_FILE_CER


def test_listen_without_a_streaming_graph_uses_the_users_head(whisper_bundle_dir: Path, microphone: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    """A whisper body: ``listen --user`` re-encodes each utterance through model.onnx with that user's head (injected weights); no torch."""
    bundle = load_bundle(whisper_bundle_dir)
    head = {name: w.numpy() for name, w in parity.perturbed(bundle.head_weights(), seed=6, scale=0.5).items()}
    store = ProfileStore(microphone["EDGEMETA_HOME"])
    store.save(Profile(user="wes", bundle_digest=bundle.digest, weights=head, adapted=True, bundle_source=str(bundle.source)))
    path = write_clip(tmp_path, "say.wav", speech()[2], None, rate=22050)
    without_torch = runtime_env(tmp_path / "no-torch", Path(microphone["EDGEMETA_HOME"]), allow_sounddevice=True, base=microphone,
                                also_block=("torch",))
    listen = ListenProcess(whisper_bundle_dir, without_torch, user="wes")
    try:
        audio = read_audio(path)
        play(path, microphone, audio)
        finals = listen.finals()
        assert finals, "no final transcript" + "".join(listen.stderr)
    finally:
        assert listen.stop() == EXIT_OK, "".join(listen.stderr)
    assert "(44100 Hz -> 16000 Hz, whole-utterance model)" in "".join(listen.stderr)
    live_text = " ".join(text for _, text in finals)
    adapted, base = Recognizer(bundle, head).transcribe([audio])[0].text, Recognizer(bundle).transcribe([audio])[0].text
    print(f"live {live_text!r} file, user's head {adapted!r}, base head {base!r}")
    assert score([adapted], [live_text]).cer <= LIVE_VS_FILE_CER < score([base], [live_text]).cer


def test_ctrl_c_stops_listen_started_as_a_background_job(bundle_dir: Path, microphone: dict[str, str]) -> None:  # noqa: F811
    """A script's background job starts with SIGINT ignored; listen still ends on Ctrl-C, cleanly."""
    listen = ListenProcess(bundle_dir, microphone, sigint_ignored=True)
    assert listen.stop() == EXIT_OK, "".join(listen.stderr)


def test_enroll_from_the_microphone(microphone: dict[str, str], pulse_index: str, bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """``enroll`` shows sentences; each is spoken into the virtual microphone (chosen by its index) as it appears."""
    command = [sys.executable, "-m", "edgemeta.runtime", "--bundle", str(bundle_dir), "enroll", "--user", "mic",
               "--clips", "2", "--device", pulse_index, "--json"]
    enroll = subprocess.Popen(command, env=microphone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prompts = []
    try:
        for line in enroll.stdout:
            match = re.match(r"\[(\d)/2\] Read aloud: (.*)", line)
            if not match:
                report = json.loads(line)
                break
            prompts.append(match.group(2))
            path = write_clip(tmp_path, f"prompt{match.group(1)}.wav", synthesize(match.group(2), ESPEAK), None, rate=22050)
            play(path, microphone, read_audio(path))
        assert enroll.wait(timeout=60) == EXIT_OK, enroll.stderr.read()
    finally:
        enroll.kill()
    assert len(prompts) == 2
    assert report["clips_used"] == ["mic-01", "mic-02"], report
    profile = ProfileStore(microphone["EDGEMETA_HOME"]).load("mic", load_bundle(bundle_dir).digest)
    assert [c.text for c in profile.clips] == prompts
    assert all(1.0 < len(c.audio) / 16000 < 8.0 for c in profile.clips)
