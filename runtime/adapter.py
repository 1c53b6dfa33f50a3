"""On-device enrollment: a few gradient steps on the head, θ' = θ − λ ⊙ ∇L, guarded.

Steps, in order:

1. every clip is checked (:mod:`edgemeta.runtime.clip_checks`, and against
   the bundle's ``max_segment_seconds``); a failing clip is named with its
   reason and left out;
2. the frozen body runs once (onnxruntime, base head) over the remaining clips:
   its ``features`` output feeds every later step, its log-probabilities the
   transcript check;
3. the **guard** decides whether adaptation helps this user, and how many
   steps (rule below);
4. if it does, the head is adapted for the chosen number of steps on all
   remaining clips, from the bundle's enrollment head (``init.safetensors``
   when it has one, else the base head), with the bundle's learned rates λ
   (per step, if it learned them) and update rule; a non-finite or rising
   training loss (divergence) keeps the base head.

Guard rule. The candidates are step counts (:func:`guard_step_counts`): S,
S/2 and S/4 for S ≥ 4 (S alone below), and 0 (the enrollment head as it is)
when the bundle has an enrollment head of its own. k ≥ 2 clips: K-fold with
K = min(k, 5) (clip i in fold i mod K; k = 2 is leave-one-out); for each fold
the head is adapted on the other folds once, for the most steps, keeping the
head at each candidate count, and every kept head is scored on the held-out
fold. A candidate qualifies when, pooled over all held-out clips, its CTC
loss is below the base head's and its CER (of the bundle's decoder: what the
user's transcripts will be) is not above the base head's, and no fold
diverged for it (chosen on dev speakers: letting the CER rise by up to 0.01,
the evaluation's "worse" margin, left 3 of 8 typical speakers worse on their
scored clips, against 1 of 8 without, at the same gains on digits and
languages; ``reports/whisper/enrollment/dev/guard-margin.txt``). The
qualifying candidate of lowest held-out CER is chosen (then lowest loss,
then fewest steps); none qualifying keeps the base head. k = 1: no clip can
be held out, so the guard checks each candidate on that clip itself: it
trusts the meta-learned rates rather than measuring generalisation. k = 0:
base head.

The support loss is :func:`edgemeta.runtime.ctc_loss.ctc_loss` and the
steps are :func:`edgemeta.runtime.update_rule.adapt`: the loss and the loop
the rates were learned with.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Collection, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.clip_checks import signal_problem, transcript_problem
from edgemeta.runtime.ctc_decode import Decoder, greedy_decode
from edgemeta.runtime.ctc_loss import concatenated_targets, ctc_loss
from edgemeta.runtime.metrics import ErrorCounts
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import encode, normalize_text
from edgemeta.runtime.update_rule import StepRates, adapt

MAX_FOLDS = 5


@dataclass
class EnrollmentClip:
    """One enrollment recording: a name to report it by, mono audio at the bundle's rate, its transcript as given."""

    name: str
    audio: np.ndarray
    text: str


@dataclass
class Scores:
    """CTC loss (mean per character) and CER of a head on some clips."""

    loss: float
    cer: float


@dataclass
class Candidate:
    """One step count the guard tried and its pooled held-out scores (``None``: it diverged in a fold)."""

    steps: int
    scores: Scores | None


@dataclass
class GuardReport:
    """What the guard measured on held-out clips and what it decided: ``after`` and ``steps`` are the chosen candidate's."""

    rule: str
    folds: int
    before: Scores
    after: Scores
    accepted: bool
    reason: str
    steps: int = 0
    candidates: list[Candidate] = field(default_factory=list)


def guard_step_counts(steps: int, has_init_head: bool) -> list[int]:
    """The step counts the guard compares for a bundle of S = ``steps`` (module docstring)."""
    counts = sorted({max(1, steps // 4), max(1, steps // 2), steps}) if steps >= 4 else [steps]
    return [0, *counts] if has_init_head and 0 not in counts else counts


@dataclass
class Enrollment:
    """The outcome of enrolling one user: the head to use and the numbers behind it.

    ``weights`` is the adapted head when ``adapted`` is true, else the base
    head. ``before``/``after`` score the base and the returned head on the
    clips used (training clips: the guard's numbers are the held-out ones).
    """

    weights: dict[str, torch.Tensor]
    adapted: bool
    decision: str
    clips_used: list[str]
    clips_left_out: list[tuple[str, str]]
    steps: int
    before: Scores | None = None
    after: Scores | None = None
    guard: GuardReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The numbers as plain data (weights left out)."""
        data = asdict(self)
        del data["weights"]
        data["clips_left_out"] = [{"clip": name, "reason": reason} for name, reason in self.clips_left_out]
        return data


class HeadTrainer:
    """Gradient steps on the bundle's TorchScript head over cached body features.

    ``torch.func`` refuses TorchScript modules, so the head's own parameters
    are set to the starting weights (:attr:`start`: the bundle's enrollment
    head), stepped in place by :func:`~edgemeta.runtime.update_rule.adapt`
    under plain autograd, and read back as new tensors. :attr:`base` is the
    head users who have not enrolled get.
    """

    def __init__(self, bundle: Bundle, rates: StepRates | None = None) -> None:
        self.head = bundle.load_head()
        self.head.eval()
        self.base = {name: w.float() for name, w in bundle.head_weights().items()}
        self.start = {name: w.float() for name, w in bundle.init_weights().items()}
        self.rates = bundle.step_rates() if rates is None else rates
        self.rule = bundle.update_rule
        own = dict(self.head.named_parameters())  # head.pt names them exactly as the manifest does
        self.params = {name: own[name] for name in self.base}

    def load(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Set the head's parameters to ``weights``."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(weights[name])

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the head's current parameters, manifest names."""
        return {name: param.detach().clone() for name, param in self.params.items()}

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of ``[batch, frames, feature_size]`` features with the current head."""
        return F.log_softmax(self.head(features), dim=-1)

    def adapt(self, features: torch.Tensor, frame_lengths: torch.Tensor, targets: Sequence[Sequence[int]], steps: int,
              final_loss: bool = True, keep: Collection[int] = ()) -> tuple[dict[str, torch.Tensor], list[float], dict[int, dict[str, torch.Tensor]]]:
        """``steps`` updates from :attr:`start` on a batch.

        Returns the adapted weights, the loss before each step (and after the
        last, with ``final_loss``) and the weights after each step count in
        ``keep`` (0: the start).
        """
        self.load(self.start)
        labels, label_lengths = concatenated_targets(targets)
        kept = {0: self.weights()} if 0 in keep else {}

        def loss_of(_: Mapping[str, torch.Tensor]) -> torch.Tensor:  # the head reads self.params, which adapt steps in place
            return ctc_loss(self.log_probs(features), labels, frame_lengths, label_lengths)

        def after_step(step: int, _: Mapping[str, torch.Tensor]) -> None:
            if step in keep:
                kept[step] = self.weights()

        _, losses = adapt(self.params, loss_of, self.rates, steps, in_place=True, rule=self.rule, after_step=after_step)
        if final_loss:
            with torch.no_grad():
                losses.append(loss_of(self.params))
        return self.weights(), [float(loss) for loss in losses], kept

    @torch.no_grad()
    def score(self, weights: Mapping[str, torch.Tensor], features: torch.Tensor, frame_lengths: torch.Tensor, targets: Sequence[Sequence[int]], texts: Sequence[str], counts: ErrorCounts,
              decode: Decoder = greedy_decode) -> list[float]:
        """Per-clip losses of ``weights`` on a batch; its errors (transcripts from ``decode``) are added to ``counts``."""
        self.load(weights)
        log_probs = self.log_probs(features)
        for row, n, text in zip(log_probs.numpy(), frame_lengths.tolist(), texts):
            counts.add(text, decode(row, n))
        labels, label_lengths = concatenated_targets(targets)
        return ctc_loss(log_probs, labels, frame_lengths, label_lengths, reduction="none").tolist()


def _finite(weights: Mapping[str, torch.Tensor], losses: Sequence[float]) -> bool:
    return all(math.isfinite(x) for x in losses) and all(bool(torch.isfinite(w).all()) for w in weights.values())


class Adapter:
    """Enroll users on one bundle: checks, features once, guard, S steps (see the module docstring).

    ``threads``: onnxruntime threads for the body (torch's are the caller's
    ``torch.set_num_threads``). ``rates`` replaces the bundle's λ (a float:
    one scalar rate for every parameter, e.g. for fine-tuning controls);
    ``steps`` replaces S; ``guard=False`` adapts without asking the guard and
    ``check_clips=False`` uses every clip (raw measurement, as ``edgemeta eval``
    without ``--guard``). CERs are those of the bundle's decoder, as the user
    will be transcribed (``greedy=True``: best path).
    """

    def __init__(
        self,
        bundle: Bundle,
        threads: int = 1,
        rates: StepRates | None = None,
        steps: int | None = None,
        guard: bool = True,
        check_clips: bool = True,
        greedy: bool = False,
    ) -> None:
        self.bundle = bundle
        self.decode = bundle.decoder(greedy)
        self.recognizer = Recognizer(bundle, threads=threads, greedy=True)  # base head: features and checks, no decoding
        self.trainer = HeadTrainer(bundle, rates)
        self.steps = bundle.inner_steps if steps is None else steps
        self.use_guard = guard
        self.check_clips = check_clips

    def batch(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad per-clip ``[frames, feature_size]`` features into a batch; returns it and the frame counts."""
        lengths = torch.tensor([len(f) for f in features], dtype=torch.long)
        batch = torch.zeros(len(features), int(lengths.max()), self.bundle.feature_size)
        for row, f in zip(batch, features):
            row[: len(f)] = torch.from_numpy(f)
        return batch, lengths

    def _guard(self, features: list[np.ndarray], targets: list[list[int]], texts: list[str], base: Sequence[float], base_cer: float) -> GuardReport:
        """The guard's K-fold over step counts (module docstring); ``base``/``base_cer``: the base head's per-clip losses and CER on all clips.

        Every clip is held out exactly once, so the base head's held-out scores
        are its scores on all clips, which :meth:`enroll` has already computed:
        only the adapted heads are scored here.
        """
        k = len(features)
        if k == 1:
            rule, folds = "k=1: checked on the enrollment clip itself (nothing to hold out)", [([0], [0])]
        else:
            count = min(k, MAX_FOLDS)
            rule = f"{count}-fold over {k} clips (clip i in fold i mod {count})"
            folds = [([i for i in range(k) if i % count != f], [i for i in range(k) if i % count == f]) for f in range(count)]
        step_counts = guard_step_counts(self.steps, self.bundle.has_init_head)
        rule += f", step counts {', '.join(map(str, step_counts))}"
        losses: dict[int, list[float]] = {s: [] for s in step_counts}
        counts = {s: ErrorCounts() for s in step_counts}
        diverged: set[int] = set()
        for train, held in folds:
            x, n = self.batch([features[i] for i in train])
            _, _, kept = self.trainer.adapt(x, n, [targets[i] for i in train], max(step_counts), final_loss=False, keep=step_counts)
            x, n = self.batch([features[i] for i in held])
            held_targets, held_texts = [targets[i] for i in held], [texts[i] for i in held]
            for steps, weights in kept.items():
                if steps in diverged or not _finite(weights, []):
                    diverged.add(steps)
                    continue
                losses[steps] += self.trainer.score(weights, x, n, held_targets, held_texts, counts[steps], self.decode)
        before = Scores(float(np.mean([base[i] for _, held in folds for i in held])), base_cer)
        candidates = [Candidate(s, None if s in diverged or not math.isfinite(float(np.mean(losses[s])))
                                else Scores(float(np.mean(losses[s])), counts[s].cer)) for s in step_counts]
        qualified = [c for c in candidates if c.scores is not None and c.scores.loss < before.loss
                     and c.scores.cer <= before.cer]
        if qualified:
            chosen = min(qualified, key=lambda c: (c.scores.cer, c.scores.loss, c.steps))
            change = "falls" if chosen.scores.cer < before.cer else "stays level"
            reason = (f"{chosen.steps} steps: held-out loss {before.loss:.3f} -> {chosen.scores.loss:.3f}, "
                      f"CER {before.cer:.3f} -> {chosen.scores.cer:.3f} ({change})")
            return GuardReport(rule, len(folds), before, chosen.scores, True, reason, chosen.steps, candidates)
        finite = [c for c in candidates if c.scores is not None]
        if not finite:
            nan = Scores(float("nan"), float("nan"))
            return GuardReport(rule, len(folds), before, nan, False, "adaptation diverged (NaN or Inf) in a guard fold", 0, candidates)
        best = min(finite, key=lambda c: (c.scores.loss, c.steps))
        if best.scores.loss >= before.loss:
            reason = f"held-out loss would rise ({before.loss:.3f} -> {best.scores.loss:.3f} at best, {best.steps} steps)"
        else:
            reason = f"held-out CER would rise ({before.cer:.3f} -> {best.scores.cer:.3f} with {best.steps} steps, the lowest loss)"
        return GuardReport(rule, len(folds), before, best.scores, False, reason, 0, candidates)

    def enroll(self, clips: Sequence[EnrollmentClip]) -> Enrollment:
        """Check, guard and adapt on ``clips``; never raises for a bad clip (it is left out)."""
        started = time.perf_counter()
        base = {name: w.clone() for name, w in self.trainer.base.items()}
        left_out: list[tuple[str, str]] = []
        kept: list[tuple[EnrollmentClip, str, list[int]]] = []
        limit = self.bundle.max_segment_seconds
        for clip in clips:
            text = normalize_text(clip.text)
            problem = signal_problem(clip.audio, self.bundle.sample_rate) if self.check_clips else None
            if problem is None and not text:
                problem = "transcript is empty after normalisation"
            if problem is None and limit is not None and len(clip.audio) > limit * self.bundle.sample_rate:
                problem = f"{len(clip.audio) / self.bundle.sample_rate:.1f} s is longer than the {limit:g} s the model takes at once"
            if problem:
                left_out.append((clip.name, problem))
            else:
                kept.append((clip, text, encode(text)))

        feature_start = time.perf_counter()
        # one clip per run: a batch is padded to its longest clip, which costs more than batching saves
        # (10 sentences of 2.9-4.0 s: 0.28 s against 0.36 s on one thread), and a clip's outputs do not depend on its batch
        outputs = [self.recognizer.infer([clip.audio])[0] for clip, _, _ in kept]
        feature_seconds = time.perf_counter() - feature_start
        usable = []
        for (clip, text, ids), output in zip(kept, outputs):
            problem = transcript_problem(output.log_probs, ids) if self.check_clips else None
            if problem:
                left_out.append((clip.name, problem))
            else:
                usable.append((clip.name, text, ids, output.features))
        names = [u[0] for u in usable]
        texts = [u[1] for u in usable]
        targets = [u[2] for u in usable]
        features = [u[3] for u in usable]
        result = Enrollment(base, False, "", names, left_out, 0)
        result.seconds = {"features": feature_seconds}
        if not usable:
            result.decision = "no usable clips: keeping the base head"
            result.seconds["total"] = time.perf_counter() - started
            return result

        x, n = self.batch(features)
        counts = ErrorCounts()
        base_losses = self.trainer.score(base, x, n, targets, texts, counts, self.decode)
        result.before = Scores(float(np.mean(base_losses)), counts.cer)
        guard_start = time.perf_counter()
        if self.use_guard:
            result.guard = self._guard(features, targets, texts, base_losses, result.before.cer)
            result.seconds["guard"] = time.perf_counter() - guard_start
            if not result.guard.accepted:
                result.after = result.before
                result.decision = f"guard refused adaptation ({result.guard.reason}): keeping the base head"
                result.seconds["total"] = time.perf_counter() - started
                return result

        steps = result.guard.steps if result.guard is not None else self.steps
        update_start = time.perf_counter()
        adapted, train_losses, _ = self.trainer.adapt(x, n, targets, steps, final_loss=False)  # scored just below, on the same clips
        result.seconds["update"] = time.perf_counter() - update_start
        counts = ErrorCounts()
        after = Scores(float(np.mean(self.trainer.score(adapted, x, n, targets, texts, counts, self.decode))), counts.cer)
        if not _finite(adapted, train_losses) or not math.isfinite(after.loss):
            result.after = result.before
            result.decision = "adaptation diverged (NaN or Inf): keeping the base head"
        elif after.loss > result.before.loss:
            result.after = result.before
            result.decision = f"adaptation diverged (training loss rose {result.before.loss:.3f} -> {after.loss:.3f}): keeping the base head"
        else:
            result.weights, result.adapted, result.after, result.steps = adapted, True, after, steps
            chosen = " (the guard's choice)" if result.guard is not None and len(result.guard.candidates) > 1 else ""
            result.decision = f"adapted the head with {steps} steps{chosen} on {len(usable)} clips"
        result.seconds["total"] = time.perf_counter() - started
        return result
