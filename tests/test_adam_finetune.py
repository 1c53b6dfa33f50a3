"""The Adam fine-tuning benchmark on the tiny model: Adam's support loss falls, and main writes the table it promises."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgemeta.benchmarks import adam_finetune
from edgemeta.evaluation.models import CheckpointModel
from edgemeta.meta_learning import encode_clips
from edgemeta.runtime.audio import write_audio
from edgemeta.runtime.manifest import Clip, write_manifest
from test_meta_learning import single_thread, utterances  # noqa: F401 (module fixture: one torch thread)


def test_adam_lowers_the_support_loss_and_main_writes_each_setting_per_dataset(tiny_checkpoint: Path, tmp_path: Path) -> None:
    init = CheckpointModel("init", tiny_checkpoint)
    with torch.no_grad():
        support = encode_clips(init.part, utterances("s", 4))
    heads, losses = adam_finetune.adam_trajectory(init.part, init.part.params(), support, 1e-2, [2, 10])
    assert sorted(heads) == [2, 10] and len(losses) == 10
    assert losses[-1] < 0.9 * losses[0]
    assert all(not torch.equal(heads[10][n], p) for n, p in init.part.params().items())  # the head moved; the model did not
    assert all(p.grad is None for p in init.part.model.parameters())

    folder = tmp_path / "noiseset"
    clips = []
    for speaker in ("a", "b"):
        for u in utterances(speaker, 6, seed=ord(speaker)):
            path = folder / f"{u.source}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, u.audio)
            clips.append(Clip(path, u.text, speaker))
    write_manifest(folder / "manifest.jsonl", clips)
    out = tmp_path / "adam.json"
    result = adam_finetune.main(["--init", str(tiny_checkpoint), "--compare", f"ms={tiny_checkpoint}", "--manifest", str(folder / "manifest.jsonl"),
                                 "--k", "2", "--lrs", "1e-3,1e-2", "--steps", "1,3", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["provenance"]["command"] and {k: v for k, v in written.items() if k != "provenance"} == json.loads(json.dumps(result))
    settings = {"init k=0", "adam lr=0.001 S=1", "adam lr=0.001 S=3", "adam lr=0.01 S=1", "adam lr=0.01 S=3", "ms k=0", "ms"}
    table = written["datasets"]["noiseset"]
    assert table["speakers"] == 2 and set(table["settings"]) == settings == set(written["overall"]["settings"])
    assert set(table["settings"]["ms"]) == {"pooled_cer", "mean_speaker_cer", "speakers_worse", "worse"}
    assert table["best_adam"] == written["overall"]["best_adam"] and table["best_adam"].startswith("adam ")
    assert table["settings"]["init k=0"] == table["settings"]["ms k=0"] and table["settings"]["init k=0"]["speakers_worse"] == 0
    assert set(written["per_speaker_cer"]["noiseset"]) == {"a", "b"}
