"""The adaptation methods, one row each: what the device's update uses as rate, how meta-training learns it, how it is evaluated.

Every module that dispatches on a method name (the meta-learner's inner loop,
``edgemeta meta-train``, ``edgemeta eval``, the recipe and their command-line
choices) reads this table instead of spelling names. The contract's names are
DESIGN.md's (``none``, ``finetune``, ``maml``, ``fomaml``, ``reptile``,
``meta-sgd``); ``ctc-control`` and ``meta-sgd-scalar`` are its two controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RateKind = Literal["per-parameter", "scalar"]
Order = Literal["first", "second"]
# What `edgemeta meta-train --method NAME` does: the query loss after adaptation (AdamW), Reptile's step toward the adapted
# heads (SGD of step β), plain CTC on the episodes' clips (control 1), or no training, only the scalar rate's choice.
MetaTraining = Literal["query-loss", "reptile", "plain-ctc", "rate-only"]


@dataclass(frozen=True)
class AdaptationMethod:
    """One method.

    ``rate``: per-parameter (learned λ) or one scalar rate α (``None``: no
    adaptation). ``order``: the default order of the meta-gradient through the
    inner loop (``None``: nothing is learned through it); ``order_choosable``:
    ``--first-order/--no-first-order`` overrides it. ``meta_training``: what
    ``edgemeta meta-train`` does for it (``None``: not a meta-training
    method). ``adapts_as``: the method its checkpoint records, whose update the
    device runs (default: its own name). For ``edgemeta eval``: ``models`` are
    the ``--model`` names it adapts, the first one given wins (``()``: every
    model, as ``none``); ``scalar_rate_from`` the models whose stored scalar
    rate it uses, the first with one (``()``: the adapted model's own rates);
    ``control`` draws it dash-dotted; ``evaluated_by_default`` runs it when
    ``--methods`` is not given.
    """

    name: str
    summary: str
    rate: RateKind | None
    order: Order | None = None
    order_choosable: bool = False
    meta_training: MetaTraining | None = None
    adapts_as: str = ""
    models: tuple[str, ...] = ()
    scalar_rate_from: tuple[str, ...] = ()
    control: bool = False
    evaluated_by_default: bool = True

    def __post_init__(self) -> None:
        if not self.adapts_as:
            object.__setattr__(self, "adapts_as", self.name)

    def second_order(self, first_order: bool | None = None) -> bool:
        """Whether the inner gradients are differentiated; ``first_order`` decides only where the order is choosable."""
        if self.order_choosable and first_order is not None:
            return not first_order
        return self.order == "second"

    @property
    def trains_body(self) -> bool:
        """Whether meta-training can reach the body (Reptile and rate selection move the head only)."""
        return self.meta_training in ("query-loss", "plain-ctc")


ADAPTATION_METHODS: dict[str, AdaptationMethod] = {m.name: m for m in (
    AdaptationMethod("none", "no adaptation: every model's k=0", rate=None),
    AdaptationMethod("finetune", "the baseline: the pretrained head, one scalar rate chosen on dev speakers (meta-train only picks it)",
                     rate="scalar", meta_training="rate-only", models=("finetune", "pretrained"),
                     scalar_rate_from=("finetune", "pretrained")),
    AdaptationMethod("maml", "MAML: a fixed scalar rate, exact second order", rate="scalar", order="second",
                     meta_training="query-loss", models=("maml",)),
    AdaptationMethod("fomaml", "first-order MAML: a fixed scalar rate", rate="scalar", order="first",
                     meta_training="query-loss", models=("fomaml",)),
    AdaptationMethod("reptile", "Reptile: the head init moves toward the adapted heads", rate="scalar", order="first",
                     meta_training="reptile", models=("reptile",)),
    AdaptationMethod("meta-sgd", "Meta-SGD: learned per-parameter rates λ (first order by default)", rate="per-parameter",
                     order="first", order_choosable=True, meta_training="query-loss", models=("meta-sgd",)),
    AdaptationMethod("ctc-control", "control (1): the head trained further with plain CTC for the same budget, then fine-tuned",
                     rate="scalar", meta_training="plain-ctc", adapts_as="finetune", models=("ctc-control",),
                     scalar_rate_from=("ctc-control",), control=True),
    AdaptationMethod("meta-sgd-scalar", "control (2): the Meta-SGD init adapted with one scalar rate instead of λ",
                     rate="scalar", models=("meta-sgd",), scalar_rate_from=("meta-sgd", "finetune", "pretrained"),
                     control=True, evaluated_by_default=False),
)}
NO_ADAPTATION = ADAPTATION_METHODS["none"]
META_TRAINING_METHODS = tuple(name for name, m in ADAPTATION_METHODS.items() if m.meta_training is not None)
# The recipe meta-trains every method of the comparison (the controls are opt-in): the rate selection first (a minute),
# then Meta-SGD, the model it ships, so that a run cut short still has it.
RECIPE_METHODS = tuple(sorted((name for name in META_TRAINING_METHODS if not ADAPTATION_METHODS[name].control),
                              key=lambda name: (ADAPTATION_METHODS[name].meta_training != "rate-only",
                                                ADAPTATION_METHODS[name].rate != "per-parameter")))


def adaptation_method(name: str) -> AdaptationMethod:
    """The method called ``name``; :class:`ValueError` naming the choices otherwise."""
    try:
        return ADAPTATION_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown adaptation method {name!r} (choose from {', '.join(ADAPTATION_METHODS)})") from None
