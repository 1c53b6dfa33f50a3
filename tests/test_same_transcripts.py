"""The rebuild check: two bundles' base-head transcripts compared clip by clip."""

from __future__ import annotations

import json
from pathlib import Path

from edgemeta.benchmarks.same_transcripts import main
from export_fixtures import bundle_dir, copy_bundle, whisper_bundle_dir, whisper_checkpoint  # noqa: F401 (fixtures)
from runtime_helpers import TEXTS, speech, write_clip


def manifest(folder: Path) -> Path:
    lines = [json.dumps({"audio": write_clip(folder, f"c{i}.wav", audio, None).name, "text": text, "speaker": "s"})
             for i, (audio, text) in enumerate(zip(speech(), TEXTS))]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def test_a_copy_transcribes_alike_and_another_model_does_not(bundle_dir: Path, whisper_bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    clips = manifest(tmp_path / "clips")
    same = main(["--bundle", str(copy_bundle(bundle_dir, tmp_path)), "--against", str(bundle_dir), "--manifest", str(clips),
                 "--json", str(tmp_path / "same.json")])
    assert same["clips"] == len(TEXTS) == same["identical"] and same["differing"] == []
    assert json.loads((tmp_path / "same.json").read_text())["identical"] == len(TEXTS)
    other = main(["--bundle", str(whisper_bundle_dir), "--against", str(bundle_dir), "--manifest", str(clips)])
    assert other["identical"] < len(TEXTS) and len(other["differing"]) == len(TEXTS) - other["identical"]
