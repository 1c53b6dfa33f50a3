"""CTC loss in plain differentiable torch ops, so that it has a second derivative.

``F.ctc_loss`` has no double backward, which exact second-order MAML and
Meta-SGD need (the inner step's gradient must itself be differentiated). This
is the textbook log-space forward (alpha) recursion over the blank-extended
label sequence, batched over utterances; autograd differentiates it as many
times as asked. It matches ``F.ctc_loss(..., reduction="mean",
zero_infinity=True)`` in value and gradient (tests), but loops over frames in
Python, so it is 10-20 times slower (measured: 5 clips x 175 frames, forward
and backward): use it only where a second derivative is needed (the inner
loop of second-order methods).

Unreachable states hold one large finite negative number instead of ``-inf``
(``logsumexp`` of all ``-inf`` has a NaN gradient), and paths are merged with
``logsumexp``, whose derivatives are ``exp(x - result)`` factors that
underflow to exactly zero for unreachable states. (``logaddexp`` would not
do: its second derivative divides ``exp`` of the floor's distance to a
reachable value, ``inf / inf``.)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from edgemeta.runtime.text import BLANK_ID

# Far below any reachable log-probability, yet finite in float32 (whose limit is 3.4e38).
_UNREACHABLE = -1.0e30


def _min_frames(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Frames each utterance needs to align: one per label plus one per repeated neighbour pair."""
    padded = _padded_targets(targets, target_lengths)
    positions = torch.arange(padded.shape[1], device=padded.device)
    repeats = (padded[:, 1:] == padded[:, :-1]) & (positions[1:] < target_lengths[:, None])
    return target_lengths + repeats.sum(1)


def _padded_targets(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """``[batch, max_len]`` targets (blank-padded) from concatenated 1-D or already padded 2-D targets."""
    if targets.dim() == 2:
        return targets.long()
    longest = int(target_lengths.max()) if target_lengths.numel() else 0
    padded = torch.full((len(target_lengths), longest), BLANK_ID, dtype=torch.long, device=targets.device)
    offset = 0
    for row, length in enumerate(target_lengths.tolist()):
        padded[row, :length] = targets[offset : offset + length]
        offset += length
    return padded


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC negative log-likelihood, twice differentiable; blank is index 0.

    ``log_probs``: ``[batch, frames, vocab]`` log-softmax outputs (batch first,
    unlike ``F.ctc_loss``); ``targets``: concatenated 1-D or padded 2-D label
    ids; ``reduction``: ``"mean"`` (each loss divided by its target length,
    then averaged over the batch, as ``F.ctc_loss``), ``"sum"`` or ``"none"``.
    Utterances that cannot align (too few frames) give ``0`` with
    ``zero_infinity`` and ``inf`` without.
    """
    batch, frames, _ = log_probs.shape
    device = log_probs.device
    input_lengths = torch.as_tensor(input_lengths, dtype=torch.long, device=device)
    target_lengths = torch.as_tensor(target_lengths, dtype=torch.long, device=device)
    labels = _padded_targets(targets.to(device), target_lengths)
    states = 2 * labels.shape[1] + 1
    extended = torch.full((batch, states), BLANK_ID, dtype=torch.long, device=device)
    extended[:, 1::2] = labels
    # A state may be entered from two back only when it is a label differing from the label two back.
    jump_allowed = torch.zeros(batch, states, dtype=torch.bool, device=device)
    jump_allowed[:, 2:] = (extended[:, 2:] != BLANK_ID) & (extended[:, 2:] != extended[:, :-2])
    floor = log_probs.new_tensor(_UNREACHABLE)

    emissions = log_probs.gather(2, extended[:, None, :].expand(batch, frames, states))
    start = torch.full((batch, states), _UNREACHABLE, dtype=log_probs.dtype, device=device)
    start[:, :2] = 0.0
    alphas = [start + emissions[:, 0]]
    for t in range(1, frames):
        previous = F.pad(alphas[-1], (2, 0), value=_UNREACHABLE)
        sources = torch.stack([previous[:, 2:], previous[:, 1:-1], torch.where(jump_allowed, previous[:, :-2], floor)])
        alphas.append(torch.logsumexp(sources, dim=0) + emissions[:, t])
    # Each utterance's alpha at its own last frame (rows shorter than the batch stop early).
    last_frame = (input_lengths.clamp(1, frames) - 1)[:, None, None].expand(batch, 1, states)
    alpha = torch.stack(alphas, dim=1).gather(1, last_frame)[:, 0]

    last = (2 * target_lengths)[:, None]
    end_blank = alpha.gather(1, last)[:, 0]
    end_label = torch.where(target_lengths > 0, alpha.gather(1, (last - 1).clamp_min(0))[:, 0], floor)
    losses = -torch.logsumexp(torch.stack([end_blank, end_label]), dim=0)

    unalignable = input_lengths < _min_frames(labels, target_lengths)
    losses = torch.where(unalignable, losses.new_tensor(0.0 if zero_infinity else float("inf")), losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return (losses / target_lengths.clamp_min(1).to(losses.dtype)).mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
