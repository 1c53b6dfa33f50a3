"""Which model and which rates each adaptive method uses, from the models given."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from edgemeta.adaptation_methods import ADAPTATION_METHODS, NO_ADAPTATION
from edgemeta.evaluation import EvalError
from edgemeta.evaluation.models import Model

ADAPTIVE = tuple(name for name in ADAPTATION_METHODS if name != NO_ADAPTATION.name)
# --model names: the models the methods adapt, and none (a model reported at k=0 only).
MODEL_NAMES = tuple(dict.fromkeys(["pretrained", NO_ADAPTATION.name, *(n for m in ADAPTATION_METHODS.values() for n in m.models)]))


@dataclass
class MethodPlan:
    """An adaptive method: the model it adapts and the rates it uses (``None``: the model's own)."""

    method: str
    model: str
    rates: float | None
    rate_source: str


def plan_method(method: str, models: dict[str, Model]) -> MethodPlan:
    """How ``method`` is evaluated with the models given (its row of the adaptation table); :class:`EvalError` when it cannot be."""
    if method not in ADAPTIVE:
        raise EvalError(f"unknown method {method!r} (choose from {', '.join(ADAPTATION_METHODS)})")
    row = ADAPTATION_METHODS[method]
    given = [name for name in row.models if name in models]
    if not given:
        raise EvalError(f"method {method} needs " + " or ".join(f"--model {name}=PATH" for name in row.models))
    model = models[given[0]]
    if not row.scalar_rate_from:
        if not model.has_rates:
            raise EvalError(f"method {method}: model {model.name} ({model.path}) stores neither rates λ nor a scalar rate")
        return MethodPlan(method, model.name, None, f"{model.name}'s own rates")
    for name in row.scalar_rate_from:
        if name in models and models[name].scalar_rate is not None:
            return MethodPlan(method, model.name, models[name].scalar_rate, models[name].scalar_rate_source)
    raise EvalError(f"method {method} needs a scalar rate, stored in the " + " or ".join(row.scalar_rate_from) + " model: "
                    "none given has one ('edgemeta meta-train --method finetune' stores one)")


def plan_methods(models: dict[str, Model], requested: list[str] | None) -> list[MethodPlan]:
    """Adaptive methods to run: those ``requested`` (all must be possible), or every default one the given models allow."""
    if requested is not None:
        return [plan_method(m, models) for m in dict.fromkeys(requested) if m != NO_ADAPTATION.name]
    candidates = [name for name in ADAPTIVE
                  if ADAPTATION_METHODS[name].evaluated_by_default and any(m in models for m in ADAPTATION_METHODS[name].models)]
    plans = []
    for method in candidates:
        try:
            plans.append(plan_method(method, models))
        except EvalError as error:
            print(f"note: {error}: not evaluated", file=sys.stderr)
    return plans
