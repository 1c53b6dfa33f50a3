"""The head's update rule, theta' = theta - rate * direction(grad), and the S-step loop around it, written once for trainer and device.

``rates`` maps each parameter name to a tensor of the parameter's shape (Meta-SGD's
learned rates) or a float (MAML and fine-tuning's single scalar rate); :func:`adapt`
also takes one float for every parameter, or a sequence of such mappings, one per
step (rates learned per step, MAML++-style).

Two rules (:data:`UPDATE_RULES`) turn a gradient into a direction:

- ``sgd``: the gradient itself;
- ``normalized``: each tensor's gradient divided by its root mean square, so
  a step moves every tensor by about its rate whatever the size of the
  gradient. A loss's gradient grows as clips get shorter (a two-second digit
  clip's is several times a sentence's), and with plain steps rates that suit
  sentences throw a head off on short clips; normalised steps keep one set of
  rates safe across clip lengths, as Adam's first steps are.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from edgemeta.runtime.bundle_format import NORMALIZED, SGD, UPDATE_RULES

Params = dict[str, torch.Tensor]
Rates = Mapping[str, torch.Tensor | float]
StepRates = Rates | float | Sequence[Rates]

NORMALIZED_EPSILON = 1e-8


def direction(grad: torch.Tensor, rule: str) -> torch.Tensor:
    """What a step moves a parameter against: ``grad`` (``sgd``) or ``grad`` over its RMS (``normalized``)."""
    if rule == SGD:
        return grad
    if rule == NORMALIZED:
        return grad / (grad.pow(2).mean().sqrt() + NORMALIZED_EPSILON)
    raise ValueError(f"unknown update rule {rule!r} (choose from {', '.join(UPDATE_RULES)})")


def sgd_update(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates, rule: str = SGD) -> Params:
    """Functional step: new tensors, differentiable with respect to params, grads and rates."""
    return {name: params[name] - rates[name] * direction(grads[name], rule) for name in params}


@torch.no_grad()
def sgd_update_(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates, rule: str = SGD) -> None:
    """In-place step for the device (TorchScript modules refuse ``torch.func``): :func:`sgd_update`'s values copied in."""
    for name, value in sgd_update(params, grads, rates, rule).items():
        params[name].copy_(value)


def rates_at(rates: StepRates, step: int, names: Sequence[str]) -> Rates:
    """The rates of step ``step`` (0-based) as a mapping over ``names``."""
    if isinstance(rates, (int, float)):
        return dict.fromkeys(names, float(rates))
    if isinstance(rates, Mapping):
        return rates
    if step >= len(rates):
        raise ValueError(f"rates are given for {len(rates)} steps, step {step + 1} was asked for")
    return rates[step]


def per_step_rates(rates: Mapping[str, torch.Tensor], step_scales: Mapping[str, Sequence[float] | torch.Tensor], steps: int) -> list[Rates]:
    """Rates of each of ``steps`` steps: λ times that step's factor for the tensor (differentiable in both)."""
    return [{name: rate * step_scales[name][step] for name, rate in rates.items()} for step in range(steps)]


def adapt(
    params: Mapping[str, torch.Tensor],
    loss_of: Callable[[Params], torch.Tensor],
    rates: StepRates,
    steps: int,
    create_graph: bool = False,
    in_place: bool = False,
    rule: str = SGD,
    after_step: Callable[[int, Params], None] | None = None,
) -> tuple[Params, list[torch.Tensor]]:
    """``steps`` updates ``θ ← θ − λ_s ⊙ direction(∇loss_of(θ))`` from ``params``; returns θ' and the (detached) loss before each step.

    One loop for the meta-learner's inner loop, the fine-tuning baseline and
    the device. Functional by default: ``loss_of`` evaluates the model at the
    tensors it is given (``torch.func.functional_call``), every step makes new
    tensors, and with ``create_graph`` the gradients themselves are
    differentiable (exact second order), so an outer loss reaches ``params``
    and ``rates``. ``in_place`` is the device's form: its TorchScript head
    cannot be called with parameters passed in (``torch.func`` refuses jitted
    modules), so ``params`` are the module's own parameters, ``loss_of`` runs
    the module as it stands, and each step overwrites them with the same
    :func:`sgd_update` values. ``after_step(s, θ)`` is called after step
    ``s`` (1-based), e.g. to keep the head of each step count a guard compares.
    """
    if in_place and create_graph:
        raise ValueError("an in-place step cannot be differentiated: use the functional form for second order")
    params = dict(params)
    names = list(params)
    losses = []
    for step in range(steps):
        loss = loss_of(params)
        losses.append(loss.detach())
        grads = dict(zip(names, torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)))
        step_rates = rates_at(rates, step, names)
        if in_place:
            sgd_update_(params, grads, step_rates, rule)
        else:
            params = sgd_update(params, grads, step_rates, rule)
        if after_step is not None:
            after_step(step + 1, params)
    return params, losses
