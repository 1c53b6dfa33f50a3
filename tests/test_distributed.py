"""Two gloo processes run the meta-training loop: ranks agree exactly and match one process on the same tasks.

Tolerance: the two-process run sums per-rank gradients in a different order
and runs the body on different batch shapes than one process, so float32
results may differ by rounding; after 2 AdamW steps every parameter and λ
must agree with the single-process run within 2e-5 absolute + 1e-4 relative
(the changes the steps make are ~1e-3). Ranks must agree bit for bit (they
apply the same all-reduced gradients).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY_CONFIG
from edgemeta.checkpoint import new_checkpoint
from edgemeta.meta_train import MetaTrainConfig, meta_train
from edgemeta.model import ModelConfig, SpeechRecognizer
from test_meta_learning import single_thread  # noqa: F401 (autouse fixture)
from test_meta_train import tasks

STEPS = 2


def _config(out: Path) -> MetaTrainConfig:
    return MetaTrainConfig(out=str(out), method="meta-sgd", first_order=True, freeze_body=False, k=2, query=2, meta_batch=4, max_steps=STEPS,
                           inner_steps=2, inner_rate=0.05, checkpoint_every_minutes=60.0, threads=1)


def _init() -> dict:
    torch.manual_seed(0)
    return new_checkpoint(SpeechRecognizer(ModelConfig(**TINY_CONFIG)), "pretrained", 3, [])


def _weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {**checkpoint["model"], **{"rate:" + n: r for n, r in checkpoint["rates"].items()}}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        checkpoint = meta_train(_config(Path(out)), _init(), tasks("t", 5), [], progress=False)
        torch.save(_weights(checkpoint), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_each_other_and_with_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(2)]
    single = _weights(meta_train(_config(tmp_path / "single"), _init(), tasks("t", 5), [], progress=False))
    start = _init()["model"]
    moved = 0.0
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], value, atol=2e-5, rtol=1e-4, msg=name)
        if name in start and value.is_floating_point():
            moved = max(moved, float((value - start[name]).abs().max()))
    assert moved > 1e-4  # the runs did train
    assert (tmp_path / "ddp" / "last.pt").is_file() and (tmp_path / "ddp" / "metrics.jsonl").read_text()
