"""A private PulseAudio server as a virtual microphone, and ``edgemeta-runtime listen`` driven through it.

The real PortAudio path without a sound card (DESIGN.md's recipe): a null
sink ``vmic`` whose monitor is the default source, ``paplay`` into it, and
``sounddevice`` recording from PortAudio's ``pulse`` device. Used by the main
job's live step, the live-latency benchmark and the microphone tests.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from edgemeta.runtime.audio import SAMPLE_RATE


class VirtualMicrophoneError(RuntimeError):
    """PulseAudio could not be started (not installed, or the server refused to run)."""


@contextmanager
def virtual_microphone(folder: str | Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio server whose default source is the monitor of null sink ``vmic``.

    Yields the environment (``PULSE_SERVER``) under which PortAudio's
    ``pulse`` device records what ``paplay --device=vmic`` plays; the server is
    stopped on exit.
    """
    for program in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(program) is None:
            raise VirtualMicrophoneError(f"{program} is not installed (Debian: apt install pulseaudio pulseaudio-utils)")
    folder = Path(folder)
    runtime = folder / "pulse"
    (folder / "home").mkdir(parents=True, exist_ok=True)
    (folder / "xdg").mkdir(mode=0o700, exist_ok=True)
    server_env = dict(os.environ, HOME=str(folder / "home"), XDG_RUNTIME_DIR=str(folder / "xdg"), PULSE_RUNTIME_PATH=str(runtime))
    command = [
        "pulseaudio", "-n", "--daemonize=yes", "--exit-idle-time=-1", "--log-target=stderr",
        "--load=module-null-sink sink_name=vmic", "--load=module-native-protocol-unix auth-anonymous=1",
    ]
    started = subprocess.run(command, env=server_env, capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        raise VirtualMicrophoneError(f"pulseaudio did not start (exit {started.returncode}): {started.stderr.strip()[-500:]}")
    env = dict(os.environ, PULSE_SERVER=f"unix:{runtime / 'native'}")
    try:
        for _ in range(50):
            if subprocess.run(["pactl", "set-default-source", "vmic.monitor"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise VirtualMicrophoneError("pulseaudio started but pactl cannot reach it")
        yield env
    finally:
        pid_file = runtime / "pid"
        if pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (ProcessLookupError, ValueError):
                pass


def speech_end(audio: np.ndarray, level: float = 0.01) -> float:
    """Seconds from the start of ``audio`` to its last sample louder than ``level``."""
    loud = np.flatnonzero(np.abs(audio) > level)
    return (loud[-1] + 1) / SAMPLE_RATE if len(loud) else 0.0


class ListenProcess:
    """``edgemeta-runtime listen --jsonl`` in a subprocess; its events are collected with their arrival times."""

    def __init__(self, bundle_path: str | Path, env: dict[str, str], threads: int = 1, user: str | None = None, device: str = "pulse",
                 sigint_ignored: bool = False) -> None:
        """``sigint_ignored``: start it as a script's background job is started, with SIGINT ignored."""
        command = [sys.executable, "-m", "edgemeta.runtime", "--bundle", str(bundle_path), "--threads", str(threads),
                   "listen", "--device", device, "--jsonl"] + (["--user", user] if user else [])
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
        self.events: queue.Queue[tuple[float, dict]] = queue.Queue()
        self.stderr: list[str] = []
        while True:
            line = self.process.stderr.readline()
            self.stderr.append(line)
            if not line:
                raise RuntimeError("listen exited before it started listening: " + "".join(self.stderr)[-2000:])
            if "listening" in line:
                break
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put((time.monotonic(), json.loads(line)))

    def finals(self, quiet_seconds: float = 1.5, timeout: float = 20.0) -> list[tuple[float, str]]:
        """(arrival time, text) of the final transcripts until none has come for ``quiet_seconds``."""
        finals: list[tuple[float, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, event = self.events.get(timeout=quiet_seconds)
            except queue.Empty:
                if finals:
                    break
                continue
            if event["type"] == "final":
                finals.append((at, event["text"]))
        return finals

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; returns the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


def play(path: Path, env: dict[str, str], audio: np.ndarray) -> float:
    """Play ``path`` into the virtual microphone; return the monotonic time its speech ended."""
    subprocess.run(["paplay", "--device=vmic", str(path)], env=env, check=True)
    return time.monotonic() - (len(audio) / SAMPLE_RATE - speech_end(audio))
