"""Meta-SGD, MAML (first and second order), Reptile and the fine-tuning baseline, written functionally.

Everything adapts parameters *as tensors*: the adapted part of the model (the
head by default, what the device adapts) is called with
``torch.func.functional_call`` on a dict of tensors, and the inner loop is
the runtime's :func:`~edgemeta.runtime.update_rule.adapt`, S steps of
``θ' = θ − λ ⊙ ∇L`` on the runtime's CTC loss, written once for all methods
and the device: Meta-SGD's λ is a learned tensor per parameter, MAML's,
Reptile's and fine-tuning's a single float. No module is ever copied.

The body runs **once** per set of clips (:func:`encode_clips`): the inner
loop only re-runs the adapted part, and the body's outputs stay in the graph,
so the outer loss reaches the body through its features.

Names: inside this module, parameters are keyed as the adapted module names
them (``scale``, ``output.weight`` for the head); checkpoints, bundles and
:func:`adapt_head` use full model names (``head.scale``), converted by
:attr:`AdaptedPart.prefix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from edgemeta.adaptation_methods import ADAPTATION_METHODS
from edgemeta.batching import pad_audio, pad_targets
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import Utterance
from edgemeta.model import HEAD_PREFIX, SpeechRecognizer
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.ctc_decode import greedy_decode_batch
from edgemeta.runtime.ctc_loss import ctc_loss
from edgemeta.runtime.metrics import ErrorCounts, score
from edgemeta.runtime.update_rule import SGD, UPDATE_RULES, StepRates, adapt, per_step_rates
from edgemeta.speaker_tasks import Episode
from edgemeta.twice_differentiable_ctc import twice_differentiable_ctc_loss

Params = dict[str, torch.Tensor]
# The inner loop runs every method meta-training runs under its own name (ctc-control adapts as finetune).
METHODS = tuple(name for name, m in ADAPTATION_METHODS.items() if m.meta_training and m.adapts_as == name)
SCOPES = ("head", "gru+head", "encoder+gru+head")
FINETUNE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MAX_STEP_FACTOR = 30.0


@dataclass
class AlgorithmConfig:
    """What the inner loop does and how the outer loop sees it.

    ``inner_rate``: MAML/FOMAML/Reptile's fixed α, and Meta-SGD's initial λ
    (every element of every λ tensor starts there). ``first_order`` applies to
    Meta-SGD (``maml``/``fomaml`` fix it by name). ``scope``: ``head`` (what
    the device adapts), ``gru+head`` (ablation: the last GRU adapts too) or
    ``encoder+gru+head`` (ablation: so do the whisper encoder blocks that pretraining trained).
    ``update``: the update rule (:data:`~edgemeta.runtime.update_rule.UPDATE_RULES`).
    """

    method: str = "meta-sgd"
    inner_steps: int = 3
    inner_rate: float = 0.01
    first_order: bool = False
    rate_parameterisation: str = "log"
    scope: str = "head"
    update: str = SGD

    def __post_init__(self) -> None:
        if self.update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {', '.join(UPDATE_RULES)}, got {self.update!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.rate_parameterisation not in ("log", "softplus"):
            raise ValueError(f"rate_parameterisation must be 'log' or 'softplus', got {self.rate_parameterisation!r}")

    @property
    def second_order(self) -> bool:
        """Whether the inner gradients are differentiated (exact MAML / Meta-SGD)."""
        return ADAPTATION_METHODS[self.method].second_order(self.first_order)


class LearnedRates(nn.Module):
    """Meta-SGD's per-parameter rates λ, kept positive: ``λ = exp(ρ)`` (``log``) or ``softplus(ρ)``.

    Initialised to ``init`` everywhere. With the ``log`` parameterisation an
    Adam step moves every ``log λ`` by about the optimiser's learning rate,
    whatever the gradient's size, so λ can change by a factor ``e`` only after
    ``1 / lr`` steps: give λ a larger outer learning rate than the weights.
    ``max_rate`` bounds every λ (see :meth:`bound_`): a few elements whose
    meta-gradient keeps one sign otherwise grow by orders of magnitude, and a
    new speaker's gradient on them would make the device's step explode.
    ``steps`` > 0 also learns, per tensor, a factor for each of that many
    steps (``exp`` of a raw value started at 0, bounded to
    ``[1 / MAX_STEP_FACTOR, MAX_STEP_FACTOR]``): step ``s`` uses λ times its factor.
    """

    def __init__(
        self,
        shapes: Mapping[str, torch.Size],
        init: float,
        parameterisation: str = "log",
        dtype: torch.dtype = torch.float32,
        max_rate: float | None = None,
        steps: int = 0,
    ) -> None:
        super().__init__()
        if init <= 0 or (max_rate is not None and max_rate < init):
            raise ValueError(f"need 0 < initial rate <= max_rate, got {init} and {max_rate}")
        self.names = list(shapes)
        self.parameterisation = parameterisation
        self.raw_max = None if max_rate is None else self._inverse(max_rate)
        self.raw = nn.ParameterList(nn.Parameter(torch.full(tuple(shape), self._inverse(init), dtype=dtype)) for shape in shapes.values())
        self.step_raw = nn.Parameter(torch.zeros(len(self.names), steps, dtype=dtype)) if steps else None

    def _inverse(self, rate: float) -> float:
        return math.log(rate) if self.parameterisation == "log" else math.log(math.expm1(rate))

    def base_rates(self) -> Params:
        """The positive per-parameter rates λ, keyed like the parameters they scale."""
        positive = torch.exp if self.parameterisation == "log" else F.softplus
        return {name: positive(raw) for name, raw in zip(self.names, self.raw)}

    def step_scales(self) -> Params | None:
        """Each tensor's factor per step (``[steps]``), or ``None`` when rates are not learned per step."""
        if self.step_raw is None:
            return None
        return {name: torch.exp(raw) for name, raw in zip(self.names, self.step_raw)}

    def forward(self) -> Params | list[Params]:
        """The rates the inner loop uses: λ, or one mapping per step with per-step factors."""
        scales = self.step_scales()
        if scales is None:
            return self.base_rates()
        return per_step_rates(self.base_rates(), scales, self.step_raw.shape[1])

    @torch.no_grad()
    def bound_(self) -> None:
        """Project every λ back to at most ``max_rate`` and every step factor into its bounds (after each outer step)."""
        if self.raw_max is not None:
            for raw in self.raw:
                raw.clamp_(max=self.raw_max)
        if self.step_raw is not None:
            self.step_raw.clamp_(-math.log(MAX_STEP_FACTOR), math.log(MAX_STEP_FACTOR))


class _UpperLayers(nn.Module):
    """The last GRU and the head as one module (``gru+head``), after the encoder's trained blocks with
    ``encoder+gru+head``; shares the model's modules, so parameter names are the model's."""

    def __init__(self, model: SpeechRecognizer, encoder: bool) -> None:
        super().__init__()
        if encoder and not model.config.train_encoder_blocks:
            raise ValueError("scope encoder+gru+head adapts the encoder blocks pretraining trained: this model trained none")
        self.whisper = model.whisper if encoder else None
        self.frozen_blocks = model.config.frozen_encoder_blocks if encoder else 0
        self.gru = model.gru
        self.head = model.head
        self.bidirectional = model.config.bidirectional

    def forward(self, x: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        if self.whisper is not None:
            x = self.whisper.encoder.resume(x, frame_lengths, self.frozen_blocks)
        if self.bidirectional:
            packed = nn.utils.rnn.pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True, enforce_sorted=False)
            return self.head(nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])[0])
        return self.head(self.gru(x)[0])


class AdaptedPart:
    """The part of a model the inner loop adapts, and the frozen-per-episode part that feeds it.

    ``head``: the body is :meth:`SpeechRecognizer.body`. ``gru+head``: the
    body stops before the GRU (:meth:`SpeechRecognizer.gru_input`). ``encoder_outputs``
    (the cached :meth:`SpeechRecognizer.acoustic_features` of a whisper
    encoder's frozen blocks, keyed by :attr:`Utterance.source`) stand in for
    those blocks on the clips they hold.
    """

    def __init__(self, model: SpeechRecognizer, scope: str = "head", encoder_outputs: Mapping[str, torch.Tensor] | None = None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.model, self.scope, self.encoder_outputs = model, scope, encoder_outputs or {}
        self.module: nn.Module = model.head if scope == "head" else _UpperLayers(model, encoder=scope == "encoder+gru+head")
        self.prefix = HEAD_PREFIX if scope == "head" else ""

    def params(self) -> Params:
        """The adapted part's live parameters (the outer loop's head init), keyed by module names; never a frozen encoder's."""
        return {name: p for name, p in self.module.named_parameters() if p.requires_grad}

    def body(self, utterances: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of the adapted part ``[batch, frames, channels]`` for ``utterances`` and their frame counts."""
        reference = next(self.model.parameters())
        if all(u.source in self.encoder_outputs for u in utterances):
            outputs = [self.encoder_outputs[u.source] for u in utterances]
            frame_lengths = torch.tensor([len(o) for o in outputs], dtype=torch.long)
            out = self._below(nn.utils.rnn.pad_sequence(outputs, batch_first=True).to(reference), frame_lengths.to(reference.device))
        else:
            waveforms, lengths = pad_audio([u.audio for u in utterances])
            waveforms, lengths = waveforms.to(reference), lengths.to(reference.device)
            frame_lengths = self.model.frame_lengths(lengths)
            if self.scope == "head":
                out = self.model.body(waveforms, lengths)
            else:
                out = self._below(self.model.acoustic_features(waveforms, lengths), frame_lengths)
        return out, frame_lengths.cpu().clamp_max(out.shape[1])

    def _below(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`SpeechRecognizer.acoustic_features` -> the adapted module's input."""
        if self.scope == "head":
            return self.model.encode(features, frame_lengths)
        return self.model.gru_input(features, frame_lengths) if self.scope == "gru+head" else features

    def logits(self, params: Mapping[str, torch.Tensor], batch: "ClipBatch") -> torch.Tensor:
        """Logits of ``batch`` with the adapted part's parameters replaced by ``params``."""
        args = (batch.features,) if self.scope == "head" else (batch.features, batch.frame_lengths)
        return functional_call(self.module, dict(params), args)

    def full_names(self, params: Mapping[str, torch.Tensor]) -> Params:
        """``params`` keyed by full model names (``head.scale``)."""
        return {self.prefix + name: value for name, value in params.items()}

    def module_names(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Full-name ``params`` keyed as the adapted module names them."""
        return {name.removeprefix(self.prefix): value for name, value in params.items()}


@dataclass
class ClipBatch:
    """Clips through the body: padded features, their frame counts and padded CTC targets."""

    features: torch.Tensor
    frame_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor

    def rows(self, rows: list[int]) -> "ClipBatch":
        """A sub-batch (trimmed to its own longest clip); differentiable with respect to the features."""
        index = torch.tensor(rows, dtype=torch.long, device=self.features.device)
        frames = int(self.frame_lengths[index].max())
        labels = int(self.target_lengths[index].max())
        return ClipBatch(self.features[index, :frames], self.frame_lengths[index], self.targets[index, :labels], self.target_lengths[index])


def encode_clips(
    part: AdaptedPart,
    utterances: list[Utterance],
    cache: dict[str, torch.Tensor] | None = None,
    max_batch_samples: int = SAMPLE_RATE * 160,
) -> ClipBatch:
    """Run the body once over all ``utterances`` (length-sorted chunks of at most ``max_batch_samples``, padding included).

    Gradients flow into the body when grad mode is on. Row ``i`` of the result
    is ``utterances[i]``. With a ``cache`` (for a frozen body, used without
    gradient), features are kept per :attr:`Utterance.source` and the body only
    runs on clips not seen before.
    """
    pieces: dict[int, torch.Tensor] = {}
    if cache is not None:
        pieces = {i: cache[u.source] for i, u in enumerate(utterances) if u.source in cache}
    todo = sorted((i for i in range(len(utterances)) if i not in pieces), key=lambda i: len(utterances[i].audio))
    chunks, current = [], []
    for i in todo:
        if current and len(utterances[i].audio) * (len(current) + 1) > max_batch_samples:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    for chunk in chunks:
        features, frame_lengths = part.body([utterances[i] for i in chunk])
        frames = frame_lengths.tolist()
        for row, i in enumerate(chunk):
            pieces[i] = features[row, : frames[row]]
            if cache is not None:
                cache[utterances[i].source] = pieces[i].clone()
    frame_lengths = torch.tensor([len(pieces[i]) for i in range(len(utterances))], dtype=torch.long)
    features = nn.utils.rnn.pad_sequence([pieces[i] for i in range(len(utterances))], batch_first=True)
    flat, target_lengths = pad_targets([u.text for u in utterances])
    targets = torch.zeros(len(utterances), max(1, int(target_lengths.max())), dtype=torch.long)
    offsets = torch.cumsum(target_lengths, 0) - target_lengths
    for row, (start, length) in enumerate(zip(offsets.tolist(), target_lengths.tolist())):
        targets[row, :length] = flat[start : start + length]
    device = features.device
    return ClipBatch(features, frame_lengths.to(device), targets.to(device), target_lengths.to(device))


def task_loss(part: AdaptedPart, params: Mapping[str, torch.Tensor], batch: ClipBatch, twice_differentiable: bool = False) -> torch.Tensor:
    """The runtime's CTC loss of ``batch`` under ``params`` (its torch-ops form when a second derivative is needed)."""
    loss = twice_differentiable_ctc_loss if twice_differentiable else ctc_loss
    return loss(F.log_softmax(part.logits(params, batch), dim=-1), batch.targets, batch.frame_lengths, batch.target_lengths)


def inner_loop(
    part: AdaptedPart,
    params: Mapping[str, torch.Tensor],
    rates: StepRates,
    support: ClipBatch,
    steps: int,
    second_order: bool = False,
    rule: str = SGD,
) -> Params:
    """``steps`` updates ``θ ← θ − λ ⊙ ∇L_support(θ)`` from ``params`` (the device's loop, functional); returns the adapted tensors.

    With ``second_order`` the gradients are themselves differentiable
    (``create_graph``), so an outer loss reaches ``params``, ``rates`` and the
    support features exactly; otherwise the gradients are constants (first
    order) and only the update's own dependence on ``params`` and ``rates``
    is differentiated.
    """

    def loss_of(at: Params) -> torch.Tensor:
        return task_loss(part, at, support, twice_differentiable=second_order)

    return adapt(params, loss_of, rates, steps, create_graph=second_order, rule=rule)[0]


def _adaptable(params: Mapping[str, torch.Tensor]) -> Params:
    """Parameters the inner loop can differentiate even when they are frozen leaves (evaluation)."""
    return {name: p if p.requires_grad else p.detach().requires_grad_() for name, p in params.items()}


def query_loss_after_adaptation(
    part: AdaptedPart, rates: StepRates, support: ClipBatch, query: ClipBatch, config: AlgorithmConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The Meta-SGD / MAML objective of one episode: query loss after ``inner_steps`` steps on the support set.

    Returns the differentiable loss and numbers to log (support loss before
    and after adaptation, query loss).
    """
    params = part.params()
    adapted = inner_loop(part, params, rates, support, config.inner_steps, config.second_order, config.update)
    loss = task_loss(part, adapted, query)
    with torch.no_grad():
        stats = {
            "support_before": task_loss(part, params, support).item(),
            "support_after": task_loss(part, adapted, support).item(),
            "query_after": loss.item(),
        }
    return loss, stats


def reptile_direction(part: AdaptedPart, rate: float, clips: ClipBatch, steps: int) -> tuple[Params, dict[str, float]]:
    """``θ − θ'`` after ``steps`` first-order steps on ``clips`` (Reptile's update is ``θ ← θ − β (θ − θ')``) and the losses before/after."""
    params = {n: p.detach() for n, p in part.params().items()}
    adapted = {n: p.detach() for n, p in inner_loop(part, _adaptable(params), rate, clips, steps).items()}
    with torch.no_grad():
        stats = {"support_before": task_loss(part, params, clips).item(), "support_after": task_loss(part, adapted, clips).item()}
    return {name: params[name] - adapted[name] for name in params}, stats


@torch.no_grad()
def decode(part: AdaptedPart, params: Mapping[str, torch.Tensor], batch: ClipBatch) -> list[str]:
    """Greedy transcripts of ``batch`` with the adapted part's parameters ``params``."""
    log_probs = F.log_softmax(part.logits(params, batch), dim=-1)
    return greedy_decode_batch(log_probs.float().cpu().numpy(), batch.frame_lengths.cpu().numpy())


@dataclass
class AdaptationScore:
    """Errors on one episode's query clips before (k=0) and after adapting on its support clips."""

    task: str
    before: ErrorCounts
    after: ErrorCounts


def pooled_cer(counts: list[ErrorCounts]) -> float:
    """Σ character edits / Σ reference characters."""
    return sum(c.char_edits for c in counts) / max(1, sum(c.chars for c in counts))


def score_adaptation(
    part: AdaptedPart, episodes: list[Episode], batches: list[EpisodeBatch], rates: StepRates, steps: int, rule: str = SGD
) -> list[AdaptationScore]:
    """Adapt on each episode's support batch (first order, no graph kept) and score its query clips."""
    params = {n: p.detach() for n, p in part.params().items()}
    scores = []
    for episode, batch in zip(episodes, batches):
        with torch.enable_grad():
            adapted = {n: p.detach() for n, p in inner_loop(part, _adaptable(params), rates, batch.support, steps, rule=rule).items()}
        references = [u.text for u in episode.query]
        before = score(references, decode(part, params, batch.query))
        scores.append(AdaptationScore(episode.task, before, score(references, decode(part, adapted, batch.query))))
    return scores


@dataclass
class EpisodeBatch:
    """One episode's clips through the body: its support, its query and (when encoded together) both, support first."""

    support: ClipBatch
    query: ClipBatch
    clips: ClipBatch | None


def encode_episodes(
    part: AdaptedPart, episodes: list[Episode], cache: dict[str, torch.Tensor] | None = None, support_gradient: bool = True
) -> list[EpisodeBatch]:
    """Each episode's batches, the body run once over all the episodes' clips together.

    ``support_gradient=False`` (first-order methods: their outer loss never
    reaches the body through support features) runs the support clips
    without a graph, in a second call, which saves their share of the body's
    backward pass; ``clips`` is then ``None``.
    """
    if support_gradient or not torch.is_grad_enabled():
        batch = encode_clips(part, [u for e in episodes for u in e.support + e.query], cache)
        out, start = [], 0
        for episode in episodes:
            k, q = len(episode.support), len(episode.query)
            support, query = list(range(start, start + k)), list(range(start + k, start + k + q))
            out.append(EpisodeBatch(batch.rows(support), batch.rows(query), batch.rows(support + query)))
            start += k + q
        return out
    with torch.no_grad():
        support_batch = encode_clips(part, [u for e in episodes for u in e.support], cache)
    query_batch = encode_clips(part, [u for e in episodes for u in e.query], cache)
    out, s, q = [], 0, 0
    for episode in episodes:
        out.append(EpisodeBatch(support_batch.rows(list(range(s, s + len(episode.support)))),
                                query_batch.rows(list(range(q, q + len(episode.query)))), None))
        s, q = s + len(episode.support), q + len(episode.query)
    return out


def select_scalar_rate(
    part: AdaptedPart, episodes: list[Episode], steps: int, grid: tuple[float, ...] = FINETUNE_GRID, rule: str = SGD
) -> tuple[float, dict[float, float]]:
    """The fine-tuning baseline's rate: the grid value with the lowest pooled query CER after ``steps`` steps.

    Ties go to the smaller rate. Returns the rate and the CER of every grid value.
    """
    with torch.no_grad():
        batches = encode_episodes(part, episodes)
    table = {rate: pooled_cer([s.after for s in score_adaptation(part, episodes, batches, rate, steps, rule)]) for rate in grid}
    return min(grid, key=lambda rate: (table[rate], rate)), table


def checkpoint_rates(checkpoint: Mapping[str, Any], steps: int) -> StepRates | None:
    """The rates a checkpoint adapts with over ``steps`` steps: λ (per step with its ``step_scales``), its scalar rate, or ``None``."""
    if checkpoint.get("rates") and checkpoint.get("step_scales"):
        return per_step_rates(dict(checkpoint["rates"]), checkpoint["step_scales"], steps)
    if checkpoint.get("rates"):
        return dict(checkpoint["rates"])
    if checkpoint.get("scalar_rate") is not None:
        return float(checkpoint["scalar_rate"])
    return None


def adapt_head(
    model_or_checkpoint: SpeechRecognizer | Mapping[str, Any] | str | Path,
    support: list[Utterance],
    steps: int | None = None,
    rates: StepRates | None = None,
    rule: str | None = None,
) -> Params:
    """Adapt on a user's ``support`` clips as the device does: ``steps`` updates ``θ' = θ − λ ⊙ ∇L`` from the stored head.

    ``model_or_checkpoint``: a model (then ``steps`` and ``rates`` are
    required), a checkpoint dict or its path (they default to the
    checkpoint's ``inner_steps``, its ``rates`` (with its ``step_scales``)
    or ``scalar_rate``, and its ``update_rule``).
    ``rates``: a float, tensors keyed by full names (``head.scale``), or one such mapping per step.
    Returns the adapted parameters keyed by full names, detached; run the model
    with them through ``torch.func.functional_call(model, adapted, ...)`` or
    :func:`transcribe`. The body is run once, without gradient.
    """
    scope = "head"
    if isinstance(model_or_checkpoint, SpeechRecognizer):
        model = model_or_checkpoint
        if steps is None or rates is None:
            raise ValueError("adapt_head on a bare model needs steps and rates")
    else:
        checkpoint = model_or_checkpoint if isinstance(model_or_checkpoint, Mapping) else load_checkpoint(model_or_checkpoint)
        model = model_from_checkpoint(checkpoint)
        scope = checkpoint.get("provenance", {}).get("scope", "head")
        steps = checkpoint["inner_steps"] if steps is None else steps
        rates = checkpoint_rates(checkpoint, steps) if rates is None else rates
        if rates is None:
            raise ValueError(f"checkpoint of method {checkpoint.get('method')!r} has neither per-parameter rates nor a scalar rate")
        rule = checkpoint.get("update_rule", SGD) if rule is None else rule
    part = AdaptedPart(model.eval(), scope)
    params = {n: p.detach() for n, p in part.params().items()}
    if not support or steps == 0:
        return part.full_names(params)
    if isinstance(rates, float | int):
        module_rates: StepRates = rates
    elif isinstance(rates, Mapping):
        module_rates = part.module_names(rates)
    else:
        module_rates = [part.module_names(step) for step in rates]
    with torch.no_grad():
        batch = encode_clips(part, support)
    adapted = inner_loop(part, _adaptable(params), module_rates, batch, steps, rule=rule or SGD)
    return part.full_names({n: p.detach() for n, p in adapted.items()})


@torch.no_grad()
def transcribe(model: SpeechRecognizer, utterances: list[Utterance], params: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """Greedy transcripts with some parameters (full names, e.g. :func:`adapt_head`'s output) replaced."""
    model.eval()
    reference = next(model.parameters())
    order = np.argsort([len(u.audio) for u in utterances])
    results: dict[int, str] = {}
    for start in range(0, len(order), 16):
        chunk = [int(i) for i in order[start : start + 16]]
        waveforms, lengths = pad_audio([utterances[i].audio for i in chunk])
        log_probs = functional_call(model, dict(params or {}), (waveforms.to(reference), lengths.to(reference.device)))
        results.update(zip(chunk, greedy_decode_batch(log_probs.float().cpu().numpy(), model.frame_lengths(lengths).numpy())))
    return [results[i] for i in range(len(utterances))]
