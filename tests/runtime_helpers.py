"""What the runtime tests share: speech clips, a subprocess with forbidden imports blocked, a bundle variant.

Import from test modules (``from runtime_helpers import ...``); the tiny
bundle itself comes from ``export_fixtures`` (exported once per session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import skip_or_fail
from edgemeta.runtime.adapter import EnrollmentClip
from edgemeta.runtime.audio import SAMPLE_RATE, resample, write_audio
from edgemeta.runtime.bundle import load_bundle, manifest_checksum
from edgemeta.runtime.bundle_format import MANIFEST
from edgemeta.synth import SynthesisError, VoiceSpec, synthesize_many

ESPEAK = VoiceSpec("espeak-ng", "en-us", pitch=50, rate=160, variant="m3")
TEXTS = (
    "the cat sat on the mat",
    "open the door please",
    "she sells sea shells",
    "we meet at seven",
    "turn left at the corner",
    "a bowl of hot soup",
)

# Imported by every runtime subprocess: torchaudio, onnx and the trainer's own
# modules (and, unless allowed, sounddevice) fail to import, as on a device
# that does not have them.
BLOCKER = '''
import sys

BLOCKED = {blocked!r}
ALLOWED = ("edgemeta", "edgemeta.runtime")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("edgemeta.") and not (name == "edgemeta.runtime" or name.startswith("edgemeta.runtime.")):
            raise ModuleNotFoundError(f"runtime test: trainer module {{name}} must not be imported", name=name)
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"runtime test: {{name}} must not be imported", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''

_SPOKEN: dict[tuple[str, ...], list[np.ndarray]] = {}


def speech(texts: tuple[str, ...] = TEXTS) -> list[np.ndarray]:
    """16 kHz espeak-ng speech of ``texts`` (synthesized once per session)."""
    if texts not in _SPOKEN:
        try:
            _SPOKEN[texts] = synthesize_many(list(texts), ESPEAK)
        except SynthesisError as error:
            skip_or_fail(str(error))
    return _SPOKEN[texts]


def enrollment_clips(texts: tuple[str, ...] = TEXTS) -> list[EnrollmentClip]:
    """Named enrollment clips of ``texts``."""
    return [EnrollmentClip(f"clip{i}.wav", audio, text) for i, (audio, text) in enumerate(zip(speech(texts), texts))]


def write_clip(folder: Path, name: str, audio: np.ndarray, text: str | None, rate: int = SAMPLE_RATE) -> Path:
    """Write ``audio`` (16 kHz) as ``folder/name`` at ``rate``, with a same-stem ``.txt`` when ``text`` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_audio(path, resample(audio, SAMPLE_RATE, rate) if rate != SAMPLE_RATE else audio, rate)
    if text is not None:
        path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return path


def runtime_env(folder: Path, home: Path, allow_sounddevice: bool = False, base: dict[str, str] | None = None,
                also_block: tuple[str, ...] = ()) -> dict[str, str]:
    """Environment for a runtime subprocess: ``EDGEMETA_HOME`` set and the forbidden imports (plus ``also_block``) blocked."""
    blocked = ["torchaudio", "onnx", "wordfreq", *also_block] + ([] if allow_sounddevice else ["sounddevice"])
    site = folder / "blocker"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=tuple(blocked)), encoding="utf-8")
    env = dict(base or os.environ)
    env.update(PYTHONPATH=str(site), EDGEMETA_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def run_runtime(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m edgemeta.runtime ARGS`` and return the finished process (text output)."""
    return subprocess.run([sys.executable, "-m", "edgemeta.runtime", *args], env=env, capture_output=True, text=True, timeout=timeout)


def without_streaming(bundle_dir: Path, folder: Path) -> Path:
    """A copy of the bundle as a model without a streaming graph would ship it (another digest, same weights)."""
    copy = folder / "no-stream"
    copy.mkdir()
    manifest = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    stream_file = manifest["streaming"]["file"]
    manifest["streaming"] = None
    del manifest["files"][stream_file]
    for name in manifest["files"]:
        (copy / name).write_bytes((bundle_dir / name).read_bytes())
    manifest["checksum"] = manifest_checksum(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    load_bundle(copy)
    return copy
