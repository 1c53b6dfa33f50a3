"""This process's place in a ``torch.distributed`` job (``torchrun``), and the all-reduces meta-training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    """This process's place in a ``torch.distributed`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_environment(cls, device: str = "auto") -> "Ranks":
        """Join the process group ``torchrun`` describes, if any: nccl on this rank's GPU, gloo on CPU.

        ``device``: ``auto`` (this rank's GPU when there is one), ``cuda`` or ``cpu``.
        """
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        where = torch.device("cpu")
        if use_cuda:
            where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(where)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), where)
        return cls(device=where)

    @property
    def main(self) -> bool:
        """Rank 0 validates and writes files."""
        return self.rank == 0

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum tensors across ranks in place (one flat all-reduce)."""
        if self.world == 1:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def max(self, value: float) -> float:
        """The largest ``value`` over ranks, so that time-based decisions agree."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor)
