"""The head's update rule, theta' = theta - rate * grad, written once for trainer and device.

``rates`` maps each parameter name to a tensor of the parameter's shape (Meta-SGD's
learned rates) or a float (MAML and fine-tuning's single scalar rate).
"""

from __future__ import annotations

from typing import Mapping

import torch

Rates = Mapping[str, torch.Tensor | float]


def sgd_update(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates) -> dict[str, torch.Tensor]:
    """Functional step: new tensors, differentiable with respect to params, grads and rates."""
    return {name: params[name] - rates[name] * grads[name] for name in params}


@torch.no_grad()
def sgd_update_(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], rates: Rates) -> None:
    """In-place step for the device (TorchScript modules refuse ``torch.func``)."""
    for name, param in params.items():
        param.sub_(rates[name] * grads[name])
