"""The runtime's CTC loss in plain differentiable torch ops, so that it has a second derivative.

``F.ctc_loss`` has no double backward, which exact second-order MAML and
Meta-SGD need (the inner step's gradient must itself be differentiated). This
is the textbook log-space forward (alpha) recursion over the blank-extended
label sequence, batched over utterances; autograd differentiates it as many
times as asked. It is :func:`edgemeta.runtime.ctc_loss.ctc_loss` (the one
loss: same signature, minimum-frames rule and per-character reduction) and
matches it in value and gradient (tests), but loops over frames in Python, so
it is many times slower: use it only where a second derivative is needed (the
inner loop of second-order methods).

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

from edgemeta.runtime.ctc_loss import min_frames, reduce_per_character
from edgemeta.runtime.text import BLANK_ID

# Far below any reachable log-probability, yet finite in float32 (whose limit is 3.4e38).
_UNREACHABLE = -1.0e30


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


def twice_differentiable_ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, frame_lengths: torch.Tensor, target_lengths: torch.Tensor,
                                  reduction: str = "mean") -> torch.Tensor:
    """:func:`edgemeta.runtime.ctc_loss.ctc_loss` (same arguments and reductions), twice differentiable.

    Utterances that cannot align (fewer frames than
    :func:`~edgemeta.runtime.ctc_loss.min_frames`) give 0, as with ``zero_infinity``.
    """
    batch, frames, _ = log_probs.shape
    device = log_probs.device
    frame_lengths = torch.as_tensor(frame_lengths, dtype=torch.long, device=device)
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
    last_frame = (frame_lengths.clamp(1, frames) - 1)[:, None, None].expand(batch, 1, states)
    alpha = torch.stack(alphas, dim=1).gather(1, last_frame)[:, 0]

    last = (2 * target_lengths)[:, None]
    end_blank = alpha.gather(1, last)[:, 0]
    end_label = torch.where(target_lengths > 0, alpha.gather(1, (last - 1).clamp_min(0))[:, 0], floor)
    losses = -torch.logsumexp(torch.stack([end_blank, end_label]), dim=0)

    needed = [min_frames(row[:length]) for row, length in zip(labels.tolist(), target_lengths.tolist())]
    unalignable = frame_lengths < torch.tensor(needed, dtype=torch.long, device=device)
    return reduce_per_character(torch.where(unalignable, losses.new_tensor(0.0), losses), target_lengths, reduction)
