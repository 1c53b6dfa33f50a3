"""Meta-training: learn a body, a head init and (Meta-SGD) per-parameter rates that adapt well in S steps.

One meta-step: draw a meta-batch of episodes (one speaker each; reproducible
from the seed and the step), run the body **once** on all of their support and
query clips, adapt the head on each support set with the inner loop of
:mod:`edgemeta.meta_learning`, and take one outer AdamW step on the mean query
loss after adaptation (body, head init and λ). Reptile instead moves the head
init toward the adapted heads with plain SGD of step β. ``finetune`` trains
nothing: it picks the baseline's scalar rate on the dev speakers;
``ctc-control`` is control (1) of DESIGN.md: the same loop, data and budget
with plain CTC on the episodes' clips, then the same rate selection.

Validation is the CER on held-out (dev) speakers' scored clips after adapting
on k of their other clips, next to the CER without adaptation (k=0).
Checkpoints (``last.pt``, ``best.pt`` by adapted dev CER) are atomic and hold
everything a resume needs; a resumed run continues exactly as an
uninterrupted one would. Under ``torchrun`` every rank takes its share of each
meta-batch's episodes and the meta-gradients are summed across ranks.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from edgemeta.adaptation_methods import META_TRAINING_METHODS, AdaptationMethod, adaptation_method
from edgemeta.augment import CHANNELS, RANDOM_CONDITION_KINDS, channel_list
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint, save_checkpoint
from edgemeta.corpus import DEFAULT_LANGUAGE, corpus_languages, load_corpus
from edgemeta.distributed import Ranks
from edgemeta.encoder_cache import cached_encoder_outputs
from edgemeta.meta_learning import (
    FINETUNE_GRID,
    SCOPES,
    AdaptedPart,
    AlgorithmConfig,
    LearnedRates,
    encode_episodes,
    pooled_cer,
    query_loss_after_adaptation,
    reptile_direction,
    score_adaptation,
    select_scalar_rate,
    task_loss,
)
from edgemeta.evaluation.summary import WORSE_MARGIN
from edgemeta.model import WHISPER_TINY_EN, SpeechRecognizer, head_parameter_names
from edgemeta.runtime.ctc_loss import min_frames
from edgemeta.runtime.text import encode
from edgemeta.runtime.update_rule import SGD, UPDATE_RULES, StepRates
from edgemeta.speaker_tasks import Episode, EpisodeSampler, Task, mismatch_tasks, speaker_tasks, split_speakers
from edgemeta.splits import SPEECHOCEAN, shared_corpus
from edgemeta.training_curves import plot_training_curves

log = logging.getLogger(__name__)
DEFAULT_INNER_RATE = 0.01
ZERO_SHOT_HEADS = ("meta", "init")


@dataclass
class MetaTrainConfig:
    """A meta-training run; saved in its checkpoints' provenance.

    ``inner_rate`` is MAML/FOMAML/Reptile's fixed α and Meta-SGD's initial λ;
    ``None`` picks it like the fine-tuning baseline (the grid's best rate for
    the init model on the dev speakers; 0.01 without dev speakers).
    ``outer_lr`` is AdamW's rate for the body and head init, ``rate_lr`` for
    Meta-SGD's ``log λ`` (or softplus pre-image): with the log
    parameterisation each step moves ``log λ`` by at most about ``rate_lr``;
    ``max_rate`` bounds every λ.
    ``freeze_body`` (default) keeps the body fixed, so only head init and λ
    learn, and caches its features: about ten times more meta-steps per
    minute, which is what lets λ learn in a 15-minute budget.
    ``first_order`` overrides the method's order where it is choosable
    (Meta-SGD; ``None``: the method's default, first order: exact second
    order costs ~10x per step through the torch-ops CTC).
    ``update`` is the inner loop's update rule (``normalized``: each tensor's
    gradient over its RMS, safe across clip lengths); ``per_step_rates``
    makes Meta-SGD learn a factor per tensor and step as well.
    ``dev_manifests``: corpora whose speakers are dev tasks only (validation),
    as the split file's dev speakers are. ``zero_shot_head``: ``meta`` ships
    the meta-trained head init for every user; ``init`` keeps ``--init``'s
    head for users who have not enrolled (recorded as the checkpoint's
    ``zero_shot_head``) and starts enrollment from the meta-trained one.
    """

    init: str = ""
    out: str = "runs/meta-sgd"
    method: str = "meta-sgd"
    manifests: list[str] = field(default_factory=list)
    dev_manifests: list[str] = field(default_factory=list)
    speechocean: bool = True
    minutes: float = 15.0
    max_steps: int | None = None
    inner_steps: int = 3
    inner_rate: float | None = None
    first_order: bool | None = None
    rate_parameterisation: str = "log"
    scope: str = "head"
    update: str = SGD
    per_step_rates: bool = False
    zero_shot_head: str = "meta"
    k: int = 5
    query: int = 5
    meta_batch: int = 4
    conditions: int = 0
    channels: list[str] = field(default_factory=list)
    outer_lr: float = 3e-4
    rate_lr: float = 3e-2
    max_rate: float | None = 1.0
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    reptile_step: float = 0.5
    freeze_body: bool = True
    val_k: int = 5
    val_scored: int = 10
    val_every_minutes: float = 2.0
    checkpoint_every_minutes: float = 1.0
    log_every: int = 5
    seed: int = 0
    threads: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in META_TRAINING_METHODS:
            raise ValueError(f"method must be one of {', '.join(META_TRAINING_METHODS)}, got {self.method!r}")
        if self.k < 1 or self.query < 1 or self.meta_batch < 1 or self.inner_steps < 0 or self.conditions < 0:
            raise ValueError("k, query and meta_batch must be >= 1, inner_steps and conditions >= 0")
        if self.zero_shot_head not in ZERO_SHOT_HEADS:
            raise ValueError(f"zero_shot_head must be one of {', '.join(ZERO_SHOT_HEADS)}, got {self.zero_shot_head!r}")
        if self.per_step_rates and self.adaptation.rate != "per-parameter":
            raise ValueError(f"per-step rates are learned by Meta-SGD, not by {self.method}")

    @property
    def adaptation(self) -> AdaptationMethod:
        """The method's row of the adaptation table."""
        return adaptation_method(self.method)

    def algorithm(self) -> AlgorithmConfig:
        """The inner-loop settings (a control adapts as the method it stands in for: ``ctc-control`` as fine-tuning)."""
        first_order = not self.adaptation.second_order(self.first_order)
        return AlgorithmConfig(self.adaptation.adapts_as, self.inner_steps, self.inner_rate, first_order, self.rate_parameterisation,
                               self.scope, self.update)

    @property
    def trains_body(self) -> bool:
        """Whether the outer loop updates the body (never for Reptile and fine-tuning)."""
        return not self.freeze_body and self.adaptation.trains_body


def load_tasks(config: MetaTrainConfig) -> tuple[list[Task], list[Task], list[str]]:
    """Training and dev tasks (dev = the split file's held-out speakers) and the data sources used."""
    utterances, sources = [], []
    for manifest in config.manifests:
        utterances += load_corpus(manifest)
        sources.append(str(manifest))
    speechocean = shared_corpus(SPEECHOCEAN) if config.speechocean else None
    if speechocean is not None:
        utterances += load_corpus(speechocean)
        sources.append(str(speechocean))
    train, dev = split_speakers(utterances)
    for manifest in config.dev_manifests:
        dev += load_corpus(manifest)
    train_tasks = mismatch_tasks(speaker_tasks(train, config.k + config.query), config.conditions, config.channels)
    return train_tasks, mismatch_tasks(speaker_tasks(dev, config.val_k + config.val_scored), config.conditions, config.channels), sources


def _learning_rate_factor(config: MetaTrainConfig, step: int, elapsed: float) -> float:
    """Cosine from 1 to 0.1 over the budget (steps when ``max_steps`` is set, else wall time)."""
    progress = step / config.max_steps if config.max_steps else elapsed / (config.minutes * 60)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


class MetaTrainer:
    """One run's model, rates, optimizer and samplers; :meth:`step` is one meta-step."""

    def __init__(self, config: MetaTrainConfig, model: SpeechRecognizer, train_tasks: list[Task], dev_tasks: list[Task], ranks: Ranks,
                 encoder_outputs: dict[str, torch.Tensor] | None = None) -> None:
        self.config, self.model, self.ranks = config, model, ranks
        self.algorithm = config.algorithm()
        self.training = config.adaptation.meta_training
        self.part = AdaptedPart(model, config.scope, encoder_outputs)
        self.sampler = EpisodeSampler(train_tasks, config.k, config.query, config.seed)
        self.dev_episodes = EpisodeSampler(dev_tasks, config.val_k, config.val_scored, config.seed).fixed_episodes() if dev_tasks else []
        adapted = list(self.part.params().values())
        adapted_ids = {id(p) for p in adapted}
        body = [p for p in model.parameters() if id(p) not in adapted_ids]
        for param in model.parameters():
            param.requires_grad_(id(param) in adapted_ids or config.trains_body)
        self.rates: LearnedRates | None = None
        if config.adaptation.rate == "per-parameter":
            shapes = {name: p.shape for name, p in self.part.params().items()}
            self.rates = LearnedRates(shapes, config.inner_rate, config.rate_parameterisation, adapted[0].dtype, config.max_rate,
                                      steps=config.inner_steps if config.per_step_rates else 0)
            self.rates.to(adapted[0].device)
        # A frozen body's features never change: compute each clean clip's once (training and dev clips).
        self.cache: dict[str, torch.Tensor] | None = {} if not config.trains_body else None
        if self.training == "reptile":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(adapted, lr=config.reptile_step)
        else:
            groups = [{"params": adapted + (body if config.trains_body else []), "lr": config.outer_lr}]
            if self.rates is not None:
                groups.append({"params": list(self.rates.parameters()), "lr": config.rate_lr, "weight_decay": 0.0})
            self.optimizer = torch.optim.AdamW(groups, lr=config.outer_lr, weight_decay=config.weight_decay)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self, step: int, elapsed: float) -> dict[str, float]:
        """One meta-step on this rank's share of meta-batch ``step``, the meta-gradients summed over ranks."""
        config = self.config
        for param in self.trainable:
            param.grad = torch.zeros_like(param)
        episodes = self.sampler.meta_batch(step, config.meta_batch)[self.ranks.rank :: self.ranks.world]
        totals = torch.tensor(self._accumulate_gradients(episodes) if episodes else [0.0] * 3, dtype=torch.float64, device=self.ranks.device)
        self.ranks.sum_([p.grad for p in self.trainable] + [totals])
        grad_norm = float("nan")
        if self.training != "reptile":
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, config.clip_norm))
        factor = _learning_rate_factor(config, step, elapsed)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self.optimizer.step()
        if self.rates is not None:
            self.rates.bound_()
        loss, before, after = totals.tolist()
        return {"loss": loss, "support_before": before, "support_after": after, "grad_norm": grad_norm, "lr_factor": factor}

    def _accumulate_gradients(self, episodes: list[Episode]) -> list[float]:
        """Add this rank's share of the meta-gradient (episodes weighted ``1 / meta_batch``) to ``.grad``.

        Returns the weighted query loss and support losses before/after adaptation.
        """
        config, weight = self.config, 1.0 / self.config.meta_batch
        with torch.set_grad_enabled(config.trains_body):
            # Plain CTC trains on support and query clips alike, so its support features need a graph as second order's do.
            support_gradient = self.algorithm.second_order or self.training == "plain-ctc"
            batches = encode_episodes(self.part, episodes, self.cache, support_gradient)
        params = self.part.params()
        if self.training == "reptile":
            before = after = 0.0
            for batch in batches:
                direction, stats = reptile_direction(self.part, config.inner_rate, batch.clips, config.inner_steps)
                for name, value in direction.items():
                    params[name].grad.add_(value, alpha=weight)
                before, after = before + weight * stats["support_before"], after + weight * stats["support_after"]
            return [after, before, after]
        if self.training == "plain-ctc":
            loss = weight * sum(task_loss(self.part, params, batch.clips) for batch in batches)
            loss.backward()
            return [loss.item()] * 3
        rates = self.rates() if self.rates is not None else config.inner_rate
        loss, before, after = 0.0, 0.0, 0.0
        for batch in batches:
            episode_loss, stats = query_loss_after_adaptation(self.part, rates, batch.support, batch.query, self.algorithm)
            loss = loss + weight * episode_loss
            before, after = before + weight * stats["support_before"], after + weight * stats["support_after"]
        loss.backward()
        return [loss.item(), before, after]

    def current_rates(self) -> StepRates:
        """Rates to adapt with now, detached: λ keyed by module names (one mapping per step with per-step rates), or the scalar α."""
        if self.rates is None:
            return self.config.inner_rate
        with torch.no_grad():
            rates = self.rates()
            steps = rates if isinstance(rates, list) else [rates]
            detached = [{name: rate.detach().clone() for name, rate in step.items()} for step in steps]
        return detached if isinstance(rates, list) else detached[0]

    def validate(self) -> dict[str, float]:
        """Dev CER without adaptation (k=0) and after ``inner_steps`` steps on ``val_k`` clips; share of speakers made worse."""
        with torch.no_grad():
            batches = encode_episodes(self.part, self.dev_episodes, self.cache)
        scores = score_adaptation(self.part, self.dev_episodes, batches, self.current_rates(), self.config.inner_steps, self.config.update)
        worse = sum(s.after.cer > s.before.cer + WORSE_MARGIN for s in scores) / len(scores)
        return {"dev_cer_k0": pooled_cer([s.before for s in scores]), "dev_cer": pooled_cer([s.after for s in scores]), "dev_worse": worse}

    def rate_summary(self) -> dict[str, list[float]]:
        """``[min, median, max]`` of λ per head tensor (full names), and each tensor's step factors; empty for scalar-rate methods."""
        rates = self.full_rates()
        if rates is None:
            return {}
        summary = {n: [float(f"{float(v):.4g}") for v in (r.min(), r.median(), r.max())] for n, r in rates.items()}
        for name, factors in (self.full_step_scales() or {}).items():
            summary[f"{name} per step"] = [float(f"{float(v):.3g}") for v in factors]
        return summary

    def full_rates(self) -> dict[str, torch.Tensor] | None:
        """λ for the checkpoint: positive tensors keyed by full names (``head.scale``)."""
        if self.rates is None:
            return None
        with torch.no_grad():
            return self.part.full_names({name: rate.detach().clone() for name, rate in self.rates.base_rates().items()})

    def full_step_scales(self) -> dict[str, torch.Tensor] | None:
        """Each tensor's per-step factors (``[S]``) for the checkpoint, keyed by full names; ``None`` without per-step rates."""
        scales = None if self.rates is None else self.rates.step_scales()
        if scales is None:
            return None
        with torch.no_grad():
            return self.part.full_names({name: factors.detach().clone() for name, factors in scales.items()})

    def state(self) -> dict[str, Any]:
        """Optimizer and λ state for a resume."""
        return {"optimizer": self.optimizer.state_dict(), "rates": None if self.rates is None else self.rates.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.rates is not None:
            self.rates.load_state_dict(state["rates"])


def _fresh_state() -> dict[str, Any]:
    return {"step": 0, "elapsed": 0.0, "last_validation": 0.0, "last_save": 0.0, "best_dev_cer": None, "trainer": None, "rng": None,
            "inner_rate": None}


def _unalignable(model: SpeechRecognizer, tasks: list[Task]) -> int:
    """Clips whose transcripts need more CTC frames than the model produces for them."""
    return sum(
        int(model.frame_lengths(torch.tensor(len(u.audio)))) < min_frames(encode(u.text)) for task in tasks for u in task.utterances
    )


def run_languages(init: dict[str, Any], tasks: list[Task]) -> list[str]:
    """Every language a run used: its init's (``en`` where the init predates the record: all its data was English) and its tasks' clips'."""
    earlier = (init.get("provenance") or {}).get("languages") or [DEFAULT_LANGUAGE]
    return sorted(set(earlier) | set(corpus_languages(u for task in tasks for u in task.utterances)))


def cached_task_outputs(config: MetaTrainConfig, model: SpeechRecognizer, tasks: list[Task], progress: bool = True) -> dict[str, torch.Tensor] | None:
    """The whisper encoder's frozen blocks' cached clean outputs of every clip of ``tasks``, keyed by source (built where missing).

    ``None`` for a ``cnn-gru`` body.
    """
    if model.config.body != WHISPER_TINY_EN:
        return None
    utterances = [u for task in tasks for u in task.utterances]
    cached = cached_encoder_outputs(model, utterances, progress=progress)
    return {u.source: frames for u, frames in zip(utterances, cached.frames[0]) if frames is not None}


def meta_train(
    config: MetaTrainConfig,
    init: dict[str, Any],
    train_tasks: list[Task],
    dev_tasks: list[Task],
    sources: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume from ``OUT/last.pt``) meta-training from the ``init`` checkpoint; returns the final checkpoint.

    ``finetune`` only selects the scalar rate on ``dev_tasks``. Rank 0 writes
    ``last.pt``, ``best.pt``, ``metrics.jsonl`` and ``training_curves.png``
    under ``config.out``; every rank returns the same checkpoint dict.
    """
    torch.set_num_threads(config.threads)
    ranks = Ranks.from_environment(config.device)
    out = Path(config.out)
    resume = out / "last.pt"
    checkpoint = load_checkpoint(resume) if resume.is_file() else None
    if checkpoint is not None and checkpoint.get("state"):
        state = checkpoint["state"]
        model = model_from_checkpoint(checkpoint)
        log.info("resuming %s at step %d (%.1f min)", resume, state["step"], state["elapsed"] / 60)
    else:
        state, model = _fresh_state(), model_from_checkpoint(init)
    model.to(ranks.device).train()
    provenance = {
        "recipe": "meta-train", "config": asdict(config), "init": config.init, "init_method": init.get("method"),
        "data": sources or [], "scope": config.scope, "pretraining": init.get("provenance", {}),
        "languages": run_languages(init, dev_tasks if config.adaptation.meta_training == "rate-only" else train_tasks + dev_tasks),
        "channel_conditions": channel_conditions(config),
    }
    training = config.adaptation.meta_training
    encoder_outputs = cached_task_outputs(config, model, dev_tasks if training == "rate-only" else train_tasks + dev_tasks, progress)
    if training == "rate-only":
        return _finetune(config, AdaptedPart(model, config.scope, encoder_outputs), init, dev_tasks, provenance, ranks)
    if state["inner_rate"] is None:
        started = time.monotonic()
        if config.inner_rate is not None:
            state["inner_rate"] = config.inner_rate
        elif training == "plain-ctc" or not dev_tasks:  # the plain-CTC control picks its rate after training
            state["inner_rate"] = DEFAULT_INNER_RATE
        else:
            state["inner_rate"] = _select_rate(AdaptedPart(model, config.scope, encoder_outputs), dev_tasks, config)[0]
        state["elapsed"] += time.monotonic() - started
    config = replace(config, inner_rate=state["inner_rate"])
    provenance["config"] = asdict(config)

    trainer = MetaTrainer(config, model, train_tasks, dev_tasks, ranks, encoder_outputs)
    if state["trainer"] is not None:
        trainer.load_state(state["trainer"])
        torch.set_rng_state(state["rng"])
    speakers = sorted(set(init.get("training_speakers", [])) | {task.name for task in train_tasks})
    zero_shot = None
    if config.zero_shot_head == "init":
        zero_shot = init.get("zero_shot_head") or {name: init["model"][name].clone() for name in head_parameter_names(model)}
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        log.info("%s: %d training tasks, %d dev tasks, %d clips too short for CTC alignment",
                 config.method, len(train_tasks), len(dev_tasks), _unalignable(model, train_tasks))

    def checkpoint_now(scalar_rate: float | None = None, extra: dict | None = None) -> dict[str, Any]:
        state["trainer"], state["rng"] = trainer.state(), torch.get_rng_state()
        if scalar_rate is None and config.adaptation.rate == "scalar" and training != "plain-ctc":
            scalar_rate = config.inner_rate  # the α it meta-trained with
        return new_checkpoint(
            model, config.adaptation.adapts_as, config.inner_steps, speakers, rates=trainer.full_rates(), scalar_rate=scalar_rate,
            step_scales=trainer.full_step_scales(), update_rule=config.update, zero_shot_head=zero_shot,
            provenance={**provenance, "training_seconds": state["elapsed"], "meta_steps": state["step"], **(extra or {})},
            state=dict(state),
        )

    metrics = (out / "metrics.jsonl").open("a") if ranks.main else None
    bar = tqdm(total=config.max_steps or int(config.minutes * 60), initial=state["step"] if config.max_steps else int(state["elapsed"]),
               unit="step" if config.max_steps else "s", desc=f"meta-train {config.method}", disable=not (progress and ranks.main))
    clock = time.monotonic()
    while not _out_of_budget(config, state):
        stats = trainer.step(state["step"], state["elapsed"])
        state["step"] += 1
        now = time.monotonic()
        state["elapsed"], clock = ranks.max(state["elapsed"] + now - clock), now
        done = _out_of_budget(config, state)
        record: dict[str, Any] = {}
        if state["step"] % config.log_every == 0 or done:
            record = {"step": state["step"], "elapsed": round(state["elapsed"], 2), **{k: round(v, 5) for k, v in stats.items()},
                      "rates": trainer.rate_summary()}
        if trainer.dev_episodes and (state["elapsed"] - state["last_validation"] >= config.val_every_minutes * 60 or done):
            state["last_validation"] = state["elapsed"]
            if ranks.main:
                record = {"step": state["step"], "elapsed": round(state["elapsed"], 2), **record, **trainer.validate()}
                if state["best_dev_cer"] is None or record["dev_cer"] < state["best_dev_cer"]:
                    state["best_dev_cer"] = record["dev_cer"]
                    save_checkpoint(out / "best.pt", checkpoint_now())
        if record and ranks.main:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            bar.set_postfix(loss=f"{stats['loss']:.3f}", dev_cer=state["best_dev_cer"])
        bar.update((state["step"] if config.max_steps else min(bar.total, int(state["elapsed"]))) - bar.n)
        if state["elapsed"] - state["last_save"] >= config.checkpoint_every_minutes * 60 and not done:
            state["last_save"] = state["elapsed"]
            if ranks.main:
                save_checkpoint(resume, checkpoint_now())
    bar.close()
    extra = {}
    scalar_rate = None
    if training == "plain-ctc":
        scalar_rate, table = _select_rate(trainer.part, dev_tasks, config)
        extra = {"control": "plain CTC on the meta-training episodes, same budget", "rate_grid_cer": table}
    final = checkpoint_now(scalar_rate, extra)
    if ranks.main:
        save_checkpoint(resume, final)
        metrics.close()
        plot_training_curves(out / "metrics.jsonl", out / "training_curves.png")
    return final


def channel_conditions(config: MetaTrainConfig) -> dict[str, Any]:
    """The recording conditions meta-training put its speakers under, for the bundle's provenance."""
    return {
        "random_per_speaker": config.conditions,
        "random_kinds": RANDOM_CONDITION_KINDS if config.conditions else None,
        "named": list(config.channels),
    }


def _out_of_budget(config: MetaTrainConfig, state: dict[str, Any]) -> bool:
    return (config.max_steps is not None and state["step"] >= config.max_steps) or state["elapsed"] >= config.minutes * 60


def _select_rate(part: AdaptedPart, dev_tasks: list[Task], config: MetaTrainConfig) -> tuple[float, dict[str, float]]:
    """The fine-tuning rate from :data:`FINETUNE_GRID` on the dev speakers' fixed episodes."""
    if not dev_tasks:
        raise ValueError("selecting the fine-tuning rate needs dev speakers (speechocean762-train's split)")
    episodes = EpisodeSampler(dev_tasks, config.val_k, config.val_scored, config.seed).fixed_episodes()
    part.model.eval()
    rate, table = select_scalar_rate(part, episodes, config.inner_steps, FINETUNE_GRID, config.update)
    part.model.train()
    log.info("fine-tuning rate %g (dev CER by rate: %s)", rate, ", ".join(f"{r:g}: {c:.4f}" for r, c in table.items()))
    return rate, {f"{r:g}": round(c, 5) for r, c in table.items()}


def _finetune(config: MetaTrainConfig, part: AdaptedPart, init: dict[str, Any], dev_tasks: list[Task], provenance: dict, ranks: Ranks) -> dict[str, Any]:
    """The fine-tuning baseline: ``init``'s weights and the best scalar rate on the dev speakers."""
    rate, table = _select_rate(part, dev_tasks, config)
    checkpoint = new_checkpoint(
        part.model, config.adaptation.adapts_as, config.inner_steps, init.get("training_speakers", []), scalar_rate=rate,
        update_rule=config.update, zero_shot_head=init.get("zero_shot_head"), provenance={**provenance, "rate_grid_cer": table},
    )
    if ranks.main:
        save_checkpoint(Path(config.out) / "last.pt", checkpoint)
    return checkpoint


EXAMPLES = """\
examples:
  # Meta-SGD from a pretrained model, 15 minutes: frozen body (cached features), first order,
  # λ initialised at the fine-tuning rate picked on the dev speakers, S=3 steps on k=5 clips
  edgemeta meta-train --init runs/pretrain/last.pt --method meta-sgd --out runs/meta-sgd --minutes 15

  # the same budget for the other methods (MAML is exact second order, FOMAML first order)
  edgemeta meta-train --init runs/pretrain/last.pt --method maml --out runs/maml --minutes 15
  edgemeta meta-train --init runs/pretrain/last.pt --method reptile --out runs/reptile --minutes 15

  # fine-tuning baseline: only pick its scalar rate on the dev speakers (about a minute)
  edgemeta meta-train --init runs/pretrain/last.pt --method finetune --out runs/finetune
  # control (2): the meta-trained init with the best scalar rate instead of λ
  edgemeta meta-train --init runs/meta-sgd/last.pt --method finetune --out runs/meta-sgd-scalar
  # control (1): the head trained further with plain CTC on the same episodes and budget, then the scalar rate
  edgemeta meta-train --init runs/pretrain/last.pt --method ctc-control --out runs/ctc-control --minutes 15

  # train the body too (its features are recomputed every step: ~10x fewer meta-steps)
  edgemeta meta-train --init runs/pretrain/last.pt --no-freeze-body --out runs/meta-sgd-body --minutes 15

  # two processes on one machine (gloo; nccl on GPUs); a run folder with last.pt resumes
  torchrun --nproc-per-node 2 -m edgemeta meta-train --init runs/pretrain/last.pt --out runs/meta-sgd-ddp --threads 1
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta meta-train``."""
    defaults = MetaTrainConfig()
    parser = subparsers.add_parser(
        "meta-train",
        help="meta-train a pretrained model to adapt to new speakers (Meta-SGD, MAML, Reptile, baselines)",
        description=__doc__.split("\n\n")[0] + " Resumes from OUT/last.pt if present.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--init", required=True, help="checkpoint to start from (a pretrained model's last.pt)")
    parser.add_argument("--method", choices=META_TRAINING_METHODS, default=defaults.method,
                        help="; ".join(f"{name}: {adaptation_method(name).summary}" for name in META_TRAINING_METHODS))
    parser.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics.jsonl, training_curves.png")
    parser.add_argument("--manifest", action="append", default=[], help="extra JSONL manifest of training speakers (repeatable)")
    parser.add_argument("--dev-manifest", action="append", default=[],
                        help="JSONL manifest whose speakers are dev tasks only: validated on, never trained on (repeatable)")
    parser.add_argument("--speechocean", action=argparse.BooleanOptionalAction, default=True,
                        help=f"use ../shared/data/{SPEECHOCEAN} (train speakers as tasks, dev speakers for validation)")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="wall-time budget, validation included (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many meta-steps")
    parser.add_argument("--inner-steps", type=int, default=defaults.inner_steps, help="S, adaptation steps (the device runs the same; default: %(default)s)")
    parser.add_argument("--inner-rate", type=float, default=defaults.inner_rate,
                        help="MAML/Reptile's rate α, Meta-SGD's initial λ (default: the fine-tuning grid's best rate for --init on the dev speakers)")
    parser.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=defaults.first_order,
                        help="Meta-SGD without second derivatives (its default); --no-first-order: exact, ~10x slower per step")
    parser.add_argument("--k", type=int, default=defaults.k, help="support clips per episode (default: %(default)s)")
    parser.add_argument("--query", type=int, default=defaults.query, help="query clips per episode (default: %(default)s)")
    parser.add_argument("--meta-batch", type=int, default=defaults.meta_batch, help="episodes (speakers) per meta-step (default: %(default)s)")
    parser.add_argument("--outer-lr", type=float, default=defaults.outer_lr, help="AdamW rate of body and head init (default: %(default)s)")
    parser.add_argument("--rate-lr", type=float, default=defaults.rate_lr, help="AdamW rate of Meta-SGD's log λ (default: %(default)s)")
    parser.add_argument("--max-rate", type=float, default=defaults.max_rate, help="upper bound of every learned λ (default: %(default)s)")
    parser.add_argument("--reptile-step", type=float, default=defaults.reptile_step, help="Reptile's β (default: %(default)s)")
    parser.add_argument("--scope", choices=SCOPES, default=defaults.scope,
                        help="what the inner loop adapts (default: head, what the device adapts; the others are ablations, "
                             "encoder+gru+head for a whisper body whose last blocks pretraining trained)")
    parser.add_argument("--update", choices=UPDATE_RULES, default=defaults.update,
                        help="inner-loop update: sgd (θ − λ ⊙ ∇L) or normalized (each tensor's gradient over its RMS: "
                             "steps of about λ whatever the clips' length; default: %(default)s)")
    parser.add_argument("--per-step-rates", action=argparse.BooleanOptionalAction, default=defaults.per_step_rates,
                        help="Meta-SGD also learns a factor per tensor and step (MAML++'s per-step rates; default: off)")
    parser.add_argument("--zero-shot-head", choices=ZERO_SHOT_HEADS, default=defaults.zero_shot_head,
                        help="the head users who have not enrolled get: meta (the meta-trained init, default) or init "
                             "(--init's head; enrollment then starts from the meta-trained one)")
    parser.add_argument("--freeze-body", action=argparse.BooleanOptionalAction, default=defaults.freeze_body,
                        help="train only head init and λ, the body's features computed once and cached (default); "
                             "--no-freeze-body also trains the body through the query loss, ~10x slower per step")
    parser.add_argument("--conditions", type=int, default=defaults.conditions, metavar="N",
                        help="also make each training and dev speaker a task under N recording conditions of its own "
                             "(noise, room, 8 kHz band limit, level; one per task, for all its clips): a user is a voice "
                             "and a microphone (default: %(default)s)")
    parser.add_argument("--channels", type=channel_list, default=defaults.channels, metavar="NAMES",
                        help="also make each training and dev speaker a task through each named channel "
                             f"(comma-separated, from {', '.join(CHANNELS)}; default: none)")
    parser.add_argument("--val-every-minutes", type=float, default=defaults.val_every_minutes, help="dev validation interval (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads per process (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device,
                        help="auto: this rank's GPU if there is one (nccl between ranks), else CPU (gloo)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = MetaTrainConfig(
            init=args.init, out=args.out, method=args.method, manifests=args.manifest, dev_manifests=args.dev_manifest,
            speechocean=args.speechocean, update=args.update, per_step_rates=args.per_step_rates, zero_shot_head=args.zero_shot_head,
            minutes=args.minutes, max_steps=args.steps, inner_steps=args.inner_steps, inner_rate=args.inner_rate,
            first_order=args.first_order, k=args.k, query=args.query, meta_batch=args.meta_batch, outer_lr=args.outer_lr,
            rate_lr=args.rate_lr, max_rate=args.max_rate, reptile_step=args.reptile_step, scope=args.scope,
            freeze_body=args.freeze_body, conditions=args.conditions, channels=args.channels, val_every_minutes=args.val_every_minutes,
            threads=args.threads, seed=args.seed, device=args.device,
        )
    except ValueError as error:  # settings that cannot go together: say which, no traceback
        print(f"edgemeta meta-train: {error}", file=sys.stderr)
        return 2
    train_tasks, dev_tasks, sources = load_tasks(config)
    meta_train(config, load_checkpoint(config.init), train_tasks, dev_tasks, sources)
    if Ranks.from_environment(config.device).main:
        print(Path(config.out) / "last.pt")
    return 0
