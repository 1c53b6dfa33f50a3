"""Imports go one way: the device runtime loads no trainer module, no torchaudio, no onnx."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import importlib, json, pkgutil, sys
import edgemeta.runtime as runtime
for info in pkgutil.walk_packages(runtime.__path__, "edgemeta.runtime."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
forbidden = sorted(name for name in sys.modules
                   if name.split(".")[0] in ("torchaudio", "onnx", "sounddevice")
                   or (name.startswith("edgemeta.") and not name.startswith("edgemeta.runtime")))
print(json.dumps({"forbidden": forbidden, "file": runtime.__file__}))
"""


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_runtime_imports_no_trainer_torchaudio_onnx_or_sounddevice(where, tmp_path):
    cwd = REPO if where == "repo" else tmp_path
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["forbidden"] == []
    assert report["file"].startswith(str(REPO / "runtime"))


def test_importing_edgemeta_is_light():
    result = subprocess.run([sys.executable, "-c", "import edgemeta, sys; print('torch' in sys.modules)"],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"
