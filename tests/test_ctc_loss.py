"""The torch-ops CTC loss: same value and gradient as F.ctc_loss, and a correct second derivative."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from edgemeta.ctc_loss import ctc_loss


def _case(dtype: torch.dtype = torch.float64):
    """Four utterances: a repeated label, an empty target, one too short to align, one shorter than the batch."""
    torch.manual_seed(0)
    logits = torch.randn(4, 12, 5, dtype=dtype, requires_grad=True)
    target_lengths = torch.tensor([4, 0, 5, 3])
    targets = torch.tensor([1, 2, 2, 3] + [] + [4, 1, 4, 1, 4] + [3, 1, 2])
    input_lengths = torch.tensor([12, 7, 4, 9])  # the third needs 5 frames: it cannot align
    return logits, targets, input_lengths, target_lengths


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_gradient_match_torch(reduction: str) -> None:
    logits, targets, input_lengths, target_lengths = _case()
    ours = ctc_loss(F.log_softmax(logits, -1), targets, input_lengths, target_lengths, reduction=reduction)
    theirs = F.ctc_loss(F.log_softmax(logits, -1).transpose(0, 1), targets, input_lengths, target_lengths,
                        reduction=reduction, zero_infinity=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    # F.ctc_loss's gradient is only right through log_softmax, so compare gradients on the logits.
    weights = torch.arange(1.0, ours.numel() + 1, dtype=ours.dtype).reshape(ours.shape)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), logits)
    (theirs_grad,) = torch.autograd.grad((theirs * weights).sum(), logits)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-8, atol=1e-10)


def test_unalignable_is_infinite_without_zero_infinity() -> None:
    logits, targets, input_lengths, target_lengths = _case()
    losses = ctc_loss(F.log_softmax(logits, -1), targets, input_lengths, target_lengths, reduction="none", zero_infinity=False)
    assert torch.isinf(losses[2]) and torch.isfinite(losses[[0, 1, 3]]).all()


def test_padded_targets_equal_concatenated() -> None:
    logits, targets, input_lengths, target_lengths = _case()
    padded = torch.zeros(4, 5, dtype=torch.long)
    offset = 0
    for row, length in enumerate(target_lengths.tolist()):
        padded[row, :length] = targets[offset : offset + length]
        offset += length
    log_probs = F.log_softmax(logits, -1)
    torch.testing.assert_close(ctc_loss(log_probs, padded, input_lengths, target_lengths),
                               ctc_loss(log_probs, targets, input_lengths, target_lengths))


def test_float32_matches_torch() -> None:
    logits, targets, input_lengths, target_lengths = _case(torch.float32)
    log_probs = F.log_softmax(logits, -1)
    torch.testing.assert_close(ctc_loss(log_probs, targets, input_lengths, target_lengths),
                               F.ctc_loss(log_probs.transpose(0, 1), targets, input_lengths, target_lengths, zero_infinity=True))


def test_second_derivative_matches_finite_differences() -> None:
    """gradgradcheck compares the Hessian-vector products autograd builds with central finite differences."""
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    targets, input_lengths, target_lengths = torch.tensor([1, 1, 2, 1]), torch.tensor([5, 4]), torch.tensor([2, 2])

    def loss(x: torch.Tensor) -> torch.Tensor:
        return ctc_loss(F.log_softmax(x, -1), targets, input_lengths, target_lengths)

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(loss, (logits,), eps=1e-6, atol=1e-6)


def test_second_derivative_is_finite_with_unreachable_states() -> None:
    """Unreachable states and unalignable utterances must not leak NaN into the double backward."""
    logits, targets, input_lengths, target_lengths = _case()
    loss = ctc_loss(F.log_softmax(logits, -1), targets, input_lengths, target_lengths)
    (grad,) = torch.autograd.grad(loss, logits, create_graph=True)
    (hessian_vector,) = torch.autograd.grad((grad * grad).sum(), logits)
    assert torch.isfinite(hessian_vector).all()
    assert hessian_vector[2].abs().max() == 0  # the unalignable utterance contributes nothing
