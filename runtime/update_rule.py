"""The head's update rule, theta' = theta - rate * grad, and the S-step loop around it, written once for trainer and device.

``rates`` maps each parameter name to a tensor of the parameter's shape (Meta-SGD's
learned rates) or a float (MAML and fine-tuning's single scalar rate); :func:`adapt`
also takes one float for every parameter.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

Params = dict[str, torch.Tensor]
Rates = Mapping[str, torch.Tensor | float]


def sgd_update(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates) -> Params:
    """Functional step: new tensors, differentiable with respect to params, grads and rates."""
    return {name: params[name] - rates[name] * grads[name] for name in params}


@torch.no_grad()
def sgd_update_(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates) -> None:
    """In-place step for the device (TorchScript modules refuse ``torch.func``): :func:`sgd_update`'s values copied in."""
    for name, value in sgd_update(params, grads, rates).items():
        params[name].copy_(value)


def adapt(
    params: Mapping[str, torch.Tensor],
    loss_of: Callable[[Params], torch.Tensor],
    rates: Rates | float,
    steps: int,
    create_graph: bool = False,
    in_place: bool = False,
) -> tuple[Params, list[torch.Tensor]]:
    """``steps`` updates ``θ ← θ − λ ⊙ ∇loss_of(θ)`` from ``params``; returns θ' and the (detached) loss before each step.

    One loop for the meta-learner's inner loop, the fine-tuning baseline and
    the device. Functional by default: ``loss_of`` evaluates the model at the
    tensors it is given (``torch.func.functional_call``), every step makes new
    tensors, and with ``create_graph`` the gradients themselves are
    differentiable (exact second order), so an outer loss reaches ``params``
    and ``rates``. ``in_place`` is the device's form: its TorchScript head
    cannot be called with parameters passed in (``torch.func`` refuses jitted
    modules), so ``params`` are the module's own parameters, ``loss_of`` runs
    the module as it stands, and each step overwrites them with the same
    :func:`sgd_update` values.
    """
    if in_place and create_graph:
        raise ValueError("an in-place step cannot be differentiated: use the functional form for second order")
    if isinstance(rates, (int, float)):
        rates = dict.fromkeys(params, float(rates))
    params = dict(params)
    losses = []
    for _ in range(steps):
        loss = loss_of(params)
        losses.append(loss.detach())
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)))
        if in_place:
            sgd_update_(params, grads, rates)
        else:
            params = sgd_update(params, grads, rates)
    return params, losses
