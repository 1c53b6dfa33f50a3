"""The one CTC loss (runtime) and its twice-differentiable torch-ops form (trainer): same values, gradients, frame rule."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from edgemeta.runtime.ctc_loss import concatenated_targets, ctc_loss, min_frames
from edgemeta.twice_differentiable_ctc import twice_differentiable_ctc_loss


def _case(dtype: torch.dtype = torch.float64):
    """Four utterances: a repeated label, an empty target, one too short to align, one shorter than the batch."""
    torch.manual_seed(0)
    logits = torch.randn(4, 12, 5, dtype=dtype, requires_grad=True)
    targets, target_lengths = concatenated_targets([[1, 2, 2, 3], [], [4, 1, 4, 1, 4], [3, 1, 2]])
    frame_lengths = torch.tensor([12, 7, 4, 9])  # the third needs 5 frames: it cannot align
    return logits, targets, frame_lengths, target_lengths


def test_the_loss_is_torchs_mean_ctc_per_character() -> None:
    """``mean`` is F.ctc_loss's own mean (value and gradient); ``none`` its per-clip losses over characters."""
    logits, targets, frame_lengths, target_lengths = _case()
    log_probs = F.log_softmax(logits, -1)
    torch_mean = F.ctc_loss(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, zero_infinity=True)
    ours = ctc_loss(log_probs, targets, frame_lengths, target_lengths)
    torch.testing.assert_close(ours, torch_mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours, logits, retain_graph=True)[0], torch.autograd.grad(torch_mean, logits)[0], rtol=1e-12, atol=0)
    per_clip = F.ctc_loss(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, reduction="none", zero_infinity=True)
    expected = per_clip / torch.tensor([4.0, 1.0, 5.0, 3.0], dtype=per_clip.dtype)
    torch.testing.assert_close(ctc_loss(log_probs, targets, frame_lengths, target_lengths, reduction="none"), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(log_probs, targets, frame_lengths, target_lengths, reduction="sum")


@pytest.mark.parametrize("ids", [[1], [1, 1], [1, 2, 1], [3, 3, 3, 2, 2], [1, 2, 2, 3]])
def test_min_frames_is_where_torchs_ctc_becomes_infinite(ids: list[int]) -> None:
    """With one frame fewer than :func:`min_frames` the CTC likelihood is 0 (infinite loss); with exactly that many it is not."""
    needed = min_frames(ids)
    for frames, alignable in ((needed, True), (needed - 1, False)):
        if frames < 1:
            continue
        log_probs = torch.full((frames, 1, 5), -1.6, dtype=torch.float64)
        loss = F.ctc_loss(log_probs, torch.tensor([ids]), torch.tensor([frames]), torch.tensor([len(ids)]), reduction="none")
        assert bool(torch.isfinite(loss).all()) == alignable, (ids, frames)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_ops_form_matches_the_loss(reduction: str) -> None:
    """Value and first derivative of the twice-differentiable form equal the runtime's loss, unalignable clip included."""
    logits, targets, frame_lengths, target_lengths = _case()
    ours = twice_differentiable_ctc_loss(F.log_softmax(logits, -1), targets, frame_lengths, target_lengths, reduction=reduction)
    theirs = ctc_loss(F.log_softmax(logits, -1), targets, frame_lengths, target_lengths, reduction=reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    # F.ctc_loss's gradient is only right through log_softmax, so compare gradients on the logits.
    weights = torch.arange(1.0, ours.numel() + 1, dtype=ours.dtype).reshape(ours.shape)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), logits)
    (theirs_grad,) = torch.autograd.grad((theirs * weights).sum(), logits)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-8, atol=1e-10)


def test_padded_targets_equal_concatenated() -> None:
    logits, targets, frame_lengths, target_lengths = _case()
    padded = torch.zeros(4, 5, dtype=torch.long)
    offset = 0
    for row, length in enumerate(target_lengths.tolist()):
        padded[row, :length] = targets[offset : offset + length]
        offset += length
    log_probs = F.log_softmax(logits, -1)
    for loss in (ctc_loss, twice_differentiable_ctc_loss):
        torch.testing.assert_close(loss(log_probs, padded, frame_lengths, target_lengths), loss(log_probs, targets, frame_lengths, target_lengths))


def test_float32_torch_ops_form_matches_the_loss() -> None:
    logits, targets, frame_lengths, target_lengths = _case(torch.float32)
    log_probs = F.log_softmax(logits, -1)
    torch.testing.assert_close(twice_differentiable_ctc_loss(log_probs, targets, frame_lengths, target_lengths),
                               ctc_loss(log_probs, targets, frame_lengths, target_lengths))


def test_second_derivative_matches_finite_differences() -> None:
    """gradgradcheck compares the Hessian-vector products autograd builds with central finite differences."""
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    targets, frame_lengths, target_lengths = torch.tensor([1, 1, 2, 1]), torch.tensor([5, 4]), torch.tensor([2, 2])

    def loss(x: torch.Tensor) -> torch.Tensor:
        return twice_differentiable_ctc_loss(F.log_softmax(x, -1), targets, frame_lengths, target_lengths)

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(loss, (logits,), eps=1e-6, atol=1e-6)


def test_second_derivative_is_finite_with_unreachable_states() -> None:
    """Unreachable states and unalignable utterances must not leak NaN into the double backward."""
    logits, targets, frame_lengths, target_lengths = _case()
    loss = twice_differentiable_ctc_loss(F.log_softmax(logits, -1), targets, frame_lengths, target_lengths)
    (grad,) = torch.autograd.grad(loss, logits, create_graph=True)
    (hessian_vector,) = torch.autograd.grad((grad * grad).sum(), logits)
    assert torch.isfinite(hessian_vector).all()
    assert hessian_vector[2].abs().max() == 0  # the unalignable utterance contributes nothing
