"""``edgemeta.runtime``'s public API, called as a user would: import light, transcribe one file, enroll, errors that say what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgemeta.runtime as runtime
from export_fixtures import bundle_dir  # noqa: F401  (session fixture)
from runtime_helpers import TEXTS, speech, write_clip

LIGHT = """
import json, sys
import edgemeta.runtime
from edgemeta.runtime import BUILTIN_BUNDLE, ProfileStore, Recognizer, load_bundle, read_audio, transcribe_file
after_import = sorted(m for m in ("torch", "onnxruntime") if m in sys.modules)
print(json.dumps({"after_import": after_import, "torch_after_transcribe_names": "torch" in sys.modules,
                  "doc": bool(edgemeta.runtime.__doc__), "all": edgemeta.runtime.__all__}))
"""


def test_importing_the_api_leaves_torch_unimported() -> None:
    bare = subprocess.run([sys.executable, "-c", "import edgemeta.runtime, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'numpy')))"],
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0 and bare.stdout.strip() == "[]", bare.stderr
    result = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == ["onnxruntime"], "the transcribing names need onnxruntime, never torch"
    assert report["doc"] and {"load_bundle", "Recognizer", "enroll", "ProfileStore", "transcribe_file", "Adapter"} <= set(report["all"])


def test_every_exported_name_resolves() -> None:
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None
    assert set(runtime.__all__) <= set(dir(runtime))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        runtime.nope  # noqa: B018


def test_transcribe_with_the_built_in_bundle(tmp_path: Path) -> None:
    clip = write_clip(tmp_path, "note.wav", speech()[0], None)
    text = runtime.transcribe_file(clip)
    assert isinstance(text, str) and text.strip()
    assert text == runtime.transcribe_file(str(clip), bundle=runtime.BUILTIN_BUNDLE)


def test_enroll_then_transcribe_as_that_user_and_clear_errors(bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    clips = tmp_path / "clips"
    for index, (audio, text) in enumerate(zip(speech()[:4], TEXTS)):
        write_clip(clips, f"clip{index:02d}.wav", audio, text)
    note = write_clip(tmp_path, "note.wav", speech()[4], None)
    bundle = runtime.load_bundle(bundle_dir)

    base = runtime.transcribe_file(note, bundle=bundle)
    recognizer = runtime.Recognizer(bundle)
    assert base == recognizer.transcribe([runtime.read_audio(note, bundle.sample_rate)])[0].text

    result, profile = runtime.enroll("pat", clips, bundle=bundle, home=home)
    assert result.clips_used == [f"clip{i:02d}.wav" for i in range(4)] and profile.user == "pat" and profile.version == 1
    assert runtime.ProfileStore(home).load("pat").version == 1
    personal = runtime.transcribe_file(note, bundle=bundle_dir, user="pat", home=home)
    recognizer.set_head(profile.weights)
    assert personal == recognizer.transcribe_files([note])[0].text

    with pytest.raises(runtime.AudioError, match="missing.wav: no such file"):
        runtime.transcribe_file(tmp_path / "missing.wav", bundle=bundle)
    with pytest.raises(runtime.AudioError, match="clips: is a directory"):
        runtime.transcribe_file(clips, bundle=bundle)
    with pytest.raises(runtime.ProfileError, match="enroll first: edgemeta-runtime enroll --user nobody"):
        runtime.transcribe_file(note, bundle=bundle, user="nobody", home=home)
    with pytest.raises(runtime.UserNameError):
        runtime.enroll("../pat", clips, bundle=bundle, home=home)
    with pytest.raises(runtime.ManifestError, match="note.wav: an audio file, not a manifest"):
        runtime.enroll("quinn", note, bundle=bundle, home=home)
    assert runtime.ProfileStore(home).users() == ["pat"], "nothing saved for a source that cannot be used"
