import json

import numpy as np
import pytest
import soundfile

from edgemeta.corpus import load_corpus
from edgemeta.runtime.manifest import Clip, ManifestError, read_clips, read_manifest, scan_clips, scan_folder, write_manifest


def test_manifest_round_trip_relative_paths_and_unknown_keys(tmp_path):
    (tmp_path / "audio").mkdir()
    clip = Clip(tmp_path / "audio" / "a.wav", "hello", "spk1", {"age": 7})
    write_manifest(tmp_path / "m.jsonl", [clip])
    line = json.loads((tmp_path / "m.jsonl").read_text())
    assert line["audio"] == "audio/a.wav" and line["age"] == 7
    (back,) = read_manifest(tmp_path / "m.jsonl")
    assert back.audio == (tmp_path / "audio" / "a.wav").resolve() and back.speaker == "spk1" and back.extra == {"age": 7}


@pytest.mark.parametrize("content, message", [
    ('{"audio": "a.wav"}\n', r"m.jsonl:1: each line needs"),
    ('{"audio": "a.wav", "text": "x"}\nnot json\n', r"m.jsonl:2: not valid JSON"),
])
def test_bad_manifest_names_file_and_line(tmp_path, content, message):
    (tmp_path / "m.jsonl").write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_missing_manifest_and_folder(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no such folder"):
        scan_folder(tmp_path / "nope")


def test_folder_of_clips_with_transcripts(tmp_path):
    for name in ("b", "a", "c"):
        soundfile.write(tmp_path / f"{name}.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "b.txt").write_text("second")
    clips = read_clips(tmp_path)
    assert [c.text for c in clips] == ["first", "second"]  # c.wav has no transcript
    assert {c.speaker for c in clips} == {tmp_path.name}


def test_corpus_loader_skips_bad_clips_and_caches_outside_the_manifest(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(data / "good.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), 16000)
    (data / "bad.wav").write_text("garbage")
    write_manifest(data / "m.jsonl", [Clip(data / "good.wav", "Good 1", "s"), Clip(data / "bad.wav", "bad", "s"),
                                      Clip(data / "missing.wav", "gone", "s")])
    for attempt in range(2):  # second pass reads the cache
        utterances = load_corpus(data / "m.jsonl", progress=False)
        assert [u.text for u in utterances] == ["good one"]
    assert "bad.wav" in caplog.text and "missing.wav" in caplog.text
    assert list((tmp_path / "cache" / "edgemeta" / "audio").glob("*.npz"))
    assert sorted(p.name for p in data.iterdir()) == ["bad.wav", "good.wav", "m.jsonl"]


def test_an_audio_file_or_binary_file_is_not_a_manifest(tmp_path):
    soundfile.write(tmp_path / "clip.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ManifestError, match=r"clip.wav: an audio file, not a manifest; expected a JSONL manifest \(.jsonl\) or a folder"):
        read_clips(tmp_path / "clip.wav")
    (tmp_path / "data.bin").write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ManifestError, match=r"data.bin: not a manifest \(not UTF-8 text\); expected a JSONL manifest"):
        read_manifest(tmp_path / "data.bin")


def test_a_folder_names_audio_without_transcripts_and_refuses_when_none_is_usable(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here\n")
    with pytest.raises(ManifestError, match=r"empty: no audio files in this folder .*same-stem .txt"):
        read_clips(tmp_path / "empty")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match=r"empty.jsonl: no clips in this manifest"):
        scan_clips(tmp_path / "empty.jsonl")
    for name in ("a", "b"):
        soundfile.write(tmp_path / f"{name}.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ManifestError, match=r"none of its 2 audio files has a same-stem .txt transcript \(e.g. a.wav needs a.txt\)"):
        scan_folder(tmp_path)
    (tmp_path / "a.txt").write_text("first\n")
    clips, left_out = scan_folder(tmp_path)
    assert [c.text for c in clips] == ["first"] and left_out == [("b.wav", "no b.txt transcript")]
