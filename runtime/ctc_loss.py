"""The CTC loss and its minimum-frames rule, written once for trainer and device.

The loss is ``F.ctc_loss`` on batch-first log-probabilities (blank 0) with
``zero_infinity``: a clip with fewer frames than :func:`min_frames` has an
infinite loss, counted as 0 so that one clip too fast for the frame rate
cannot turn a batch's gradient into NaN. Each clip's loss is divided by its
characters, then averaged over clips: pretraining minimises that, Meta-SGD
learns its rates λ for it, and the device's enrollment steps on it, so a
rate learned on the server means the same step on the device.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from edgemeta.runtime.text import BLANK_ID

REDUCTIONS = ("mean", "none")


def min_frames(ids: Sequence[int]) -> int:
    """Fewest frames that can emit ``ids`` under CTC: one per label plus a blank between each repeated pair."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def concatenated_targets(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC targets of label sequences: ``(concatenated ids, lengths)``."""
    lengths = torch.tensor([len(row) for row in ids], dtype=torch.long)
    return torch.tensor([i for row in ids for i in row], dtype=torch.long), lengths


def reduce_per_character(losses: torch.Tensor, target_lengths: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-clip CTC losses divided by their characters (an empty target by 1); ``mean`` averages them over clips."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    per_character = losses / target_lengths.clamp(min=1).to(losses.dtype)
    return per_character.mean() if reduction == "mean" else per_character


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """CTC loss per character of ``[batch, frames, vocabulary]`` log-probs: mean over clips, or per clip (``none``).

    ``targets``: concatenated 1-D ids (:func:`concatenated_targets`) or padded
    2-D ``[batch, longest]``. ``mean`` equals ``F.ctc_loss(reduction="mean")``.
    """
    losses = F.ctc_loss(
        log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, blank=BLANK_ID, reduction="none", zero_infinity=True
    )
    return reduce_per_character(losses, target_lengths, reduction)
