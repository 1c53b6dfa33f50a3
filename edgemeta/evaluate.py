"""``edgemeta eval``: k-shot speaker adaptation measured per speaker, for every model and method.

Protocol (DESIGN.md, "Evaluation protocol"):

- **Scored set.** Each speaker's clips are ranked by the sha256 of
  ``speaker/clip`` (the clip's path relative to its manifest): a fixed,
  seed-independent shuffle. The last ``min(10, clips // 2)`` are the speaker's
  scored set, identical across k, methods, models and seeds; the rest are the
  adaptation pool (20 clips: 10 scored, k <= 10; 500 clips: 10 scored, k up
  to 490). A speaker's CER is Σ edits / Σ reference characters over its scored
  clips (:func:`edgemeta.runtime.metrics.score`). In speechocean762-train
  only the committed split's dev speakers are scored (the rest trained the
  models); any scored speaker in a model's training speakers is warned about.
- **Adaptation clips.** Seed ``s`` ranks the pool by the sha256 of
  ``s/speaker/clip``; k-shot adaptation uses the first k, so a seed's clips
  are nested across k and the same for every method. A k larger than a
  speaker's pool is skipped for that speaker, with a note.
- **Methods.** ``none`` is every model's k=0 (reported for every model given,
  and the baseline of "worse"). Each adaptive method uses the model trained
  for it, with that model's rates (Meta-SGD's λ, MAML/FOMAML/Reptile's α).
  ``finetune`` is the pretrained weights with the scalar rate chosen on the
  dev speakers: the ``finetune`` model (``edgemeta meta-train --method
  finetune``) or, without one, the ``pretrained`` model with its stored
  scalar rate. The controls of DESIGN.md, opt-in names beyond the contract's:
  ``ctc-control`` (the model ``--model ctc-control=PATH`` of ``edgemeta
  meta-train --method ctc-control``, adapted with its scalar rate; evaluated
  by default when that model is given) and ``meta-sgd-scalar`` (the Meta-SGD
  model's init adapted with one scalar rate instead of λ: its own stored
  scalar rate, else the fine-tuning rate; only when ``--methods`` names it).
- **Paths.** A bundle is adapted by the runtime's :class:`Adapter` and scored
  with onnxruntime, as the device does: with ``--guard`` the clip checks and
  the guard decide (a refused head scores as the base head), without it the
  adaptation is raw. A checkpoint is adapted with
  :func:`edgemeta.meta_learning.adapt_head` in PyTorch (no guard); its scored
  clips' body features are computed once per speaker.
- **Reported.** One JSON line per dataset, model, method, k, speaker and seed
  (k=0 lines repeat for every seed: no clip is drawn); a Markdown table per
  dataset × model/method × k (mean CER, spread across speakers of the
  seed-mean CER, mean WER, fraction of speakers made worse: seed-mean CER
  after > CER at k=0 of the same model + 0.01, the guard's acceptance rate);
  a PNG plot of CER against k; everything else (clip lists, guard rules and
  decisions, rates used, notes, timings) in ``OUT.summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import Utterance, load_corpus
from edgemeta.meta_learning import AdaptedPart, ClipBatch, adapt_head, decode, encode_clips
from edgemeta.runtime.adapter import CER_TOLERANCE, Adapter, EnrollmentClip
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, BundleError, is_archive, load_bundle
from edgemeta.runtime.manifest import ManifestError
from edgemeta.runtime.metrics import ErrorCounts, score
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.splits import dev_speakers
from edgemeta.train import SPEECHOCEAN

METHODS = ("none", "finetune", "maml", "fomaml", "reptile", "meta-sgd")
CONTROLS = ("ctc-control", "meta-sgd-scalar")
MODEL_NAMES = ("pretrained", *METHODS, "ctc-control")
SCORED_CLIPS = 10
WORSE_MARGIN = CER_TOLERANCE  # the runtime's guard uses the same margin
RECORD_KEYS = ("dataset", "model", "method", "k", "speaker", "seed", "cer", "wer")


class EvalError(ValueError):
    """Inputs ``edgemeta eval`` cannot use; the message names the file or option and the problem."""


# Protocol ----------------------------------------------------------------------------


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class SpeakerClips:
    """One speaker's fixed scored clips and the pool its adaptation clips are drawn from; ``names`` by clip source."""

    speaker: str
    scored: list[Utterance]
    pool: list[Utterance]
    names: dict[str, str]

    def support(self, seed: int, k: int) -> list[Utterance]:
        """The first ``k`` pool clips in seed ``seed``'s order (nested across k)."""
        order = sorted(self.pool, key=lambda u: _rank(f"{seed}/{self.speaker}/{self.names[u.source]}"))
        return order[:k]


def split_speaker(speaker: str, utterances: list[Utterance], root: Path) -> SpeakerClips:
    """Scored set and adaptation pool of one speaker's clips (``root``: the manifest's folder, for clip names)."""
    names = {}
    for u in utterances:
        source = Path(u.source)
        names[u.source] = str(source.relative_to(root)) if source.is_relative_to(root) else str(source)
    ordered = sorted(utterances, key=lambda u: _rank(f"{speaker}/{names[u.source]}"))
    cut = len(ordered) - min(SCORED_CLIPS, len(ordered) // 2)
    return SpeakerClips(speaker, ordered[cut:], ordered[:cut], names)


@dataclass
class Dataset:
    """One manifest's speakers, split by the protocol; ``name`` is the manifest's folder name."""

    name: str
    manifest: Path
    speakers: list[SpeakerClips]
    notes: list[str] = field(default_factory=list)


def load_dataset(manifest: Path) -> Dataset:
    """Read a manifest and split its speakers; speechocean762-train keeps only the committed split's dev speakers."""
    root = manifest.resolve().parent
    held_out = dev_speakers() if root.name == SPEECHOCEAN else None
    try:
        utterances = load_corpus(manifest, include_speakers=held_out)
    except ManifestError as error:
        raise EvalError(str(error)) from None
    notes = []
    if held_out is not None:
        notes.append(f"{root.name}: only the {len(held_out)} dev speakers of the committed split are scored (the others trained the models)")
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_speaker[u.speaker].append(u)
    speakers = []
    for speaker in sorted(by_speaker):
        if len(by_speaker[speaker]) < 2:
            notes.append(f"{root.name}: speaker {speaker} skipped (1 clip: nothing left to adapt on after scoring)")
        else:
            speakers.append(split_speaker(speaker, by_speaker[speaker], root))
    if not speakers:
        raise EvalError(f"{manifest}: no speaker with at least 2 readable clips (scored + adaptation)")
    return Dataset(root.name, manifest, speakers, notes)


# Models ------------------------------------------------------------------------------


@dataclass
class Adaptation:
    """One enrollment's head (``None``: the base head) and what the device's guard decided, where there is one."""

    weights: dict[str, torch.Tensor] | None
    adapted: bool
    guard_accepted: bool | None = None
    guard_rule: str | None = None
    clips_left_out: int = 0


class Model(Protocol):
    """What the evaluation needs of a checkpoint or a bundle."""

    name: str
    path: Path
    kind: str
    method: str | None
    scalar_rate: float | None
    scalar_rate_source: str
    has_rates: bool
    training_speakers: set[str]
    decoding: str

    def prepare(self, scored: list[Utterance]) -> Any: ...

    def transcribe(self, prepared: Any, weights: dict[str, torch.Tensor] | None) -> list[str]: ...

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation: ...


class CheckpointModel:
    """A PyTorch checkpoint: adapted by :func:`adapt_head`; scored clips' body features computed once per speaker."""

    kind = "checkpoint"
    decoding = "best-path"

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.checkpoint = load_checkpoint(path)
        scope = self.checkpoint.get("provenance", {}).get("scope", "head")
        self.part = AdaptedPart(model_from_checkpoint(self.checkpoint).eval(), scope)
        self.base = {n: p.detach() for n, p in self.part.params().items()}
        self.steps = int(self.checkpoint["inner_steps"])
        self.method = self.checkpoint.get("method")
        self.training_speakers = set(self.checkpoint.get("training_speakers") or [])
        scalar = self.checkpoint.get("scalar_rate")
        self.scalar_rate = None if scalar is None else float(scalar)
        self.scalar_rate_source = f"checkpoint {path.name}"
        self.rates = dict(self.checkpoint["rates"]) if self.checkpoint.get("rates") else self.scalar_rate
        self.has_rates = self.rates is not None

    def prepare(self, scored: list[Utterance]) -> ClipBatch:
        """The scored clips through the body, once."""
        with torch.no_grad():
            return encode_clips(self.part, scored)

    def transcribe(self, prepared: ClipBatch, weights: dict[str, torch.Tensor] | None) -> list[str]:
        """Greedy transcripts of the prepared clips with ``weights`` (full names) or the stored head."""
        return decode(self.part, self.base if weights is None else self.part.module_names(weights), prepared)

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation:
        """S steps of the update rule from the stored head; ``rates=None``: the checkpoint's own."""
        # adapt_head adapts only the head of a bare model; a checkpoint dict (rebuilt per call) keeps its scope.
        source = self.part.model if self.part.scope == "head" else self.checkpoint
        return Adaptation(adapt_head(source, support, self.steps, self.rates if rates is None else rates), True)


class BundleModel:
    """A bundle: enrolled by the runtime's :class:`Adapter`, scored with onnxruntime and the adapted head fed in."""

    kind = "bundle"

    def __init__(self, name: str, path: Path, threads: int, guard: bool, greedy: bool = False) -> None:
        self.name, self.path = name, path
        self.bundle = load_bundle(path)
        if self.bundle.sample_rate != SAMPLE_RATE:
            raise EvalError(f"{path}: the bundle expects {self.bundle.sample_rate} Hz audio; the evaluation reads {SAMPLE_RATE} Hz")
        self.threads, self.guard, self.greedy = threads, guard, greedy
        self.recognizer = Recognizer(self.bundle, threads=threads, greedy=greedy)
        self.decoding = "best-path" if greedy or self.bundle.decoder_settings is None else "with beam search and the bundle's language model"
        adaptation = self.bundle.adaptation
        self.method = adaptation.get("method")
        self.scalar_rate = None if adaptation.get("scalar_rate") is None else float(adaptation["scalar_rate"])
        default = adaptation.get("scalar_rate_source") == "default"
        self.scalar_rate_source = f"bundle {path.name}" + (" (the exporter's default, not chosen on dev speakers)" if default else "")
        self.has_rates = True  # rates.safetensors is a required file
        self.training_speakers = set(self.bundle.training_speakers)
        self._adapters: dict[float | None, Adapter] = {}

    def prepare(self, scored: list[Utterance]) -> list[np.ndarray]:
        """The scored clips' audio (onnxruntime runs the whole model per head)."""
        return [u.audio for u in scored]

    def transcribe(self, prepared: list[np.ndarray], weights: dict[str, torch.Tensor] | None) -> list[str]:
        """Transcripts through onnxruntime with ``weights`` fed as the head (``None``: the base head)."""
        self.recognizer.set_head(weights)
        return [t.text for t in self.recognizer.transcribe(prepared)]

    def adapt(self, support: list[Utterance], rates: float | None) -> Adaptation:
        """Enroll as the device does (``--guard``) or raw; ``rates=None``: the bundle's λ."""
        if rates not in self._adapters:
            self._adapters[rates] = Adapter(self.bundle, self.threads, rates, guard=self.guard, check_clips=self.guard, greedy=self.greedy)
        result = self._adapters[rates].enroll([EnrollmentClip(Path(u.source).name, u.audio, u.text) for u in support])
        guard = result.guard
        return Adaptation(
            result.weights if result.adapted else None, result.adapted,
            None if guard is None else guard.accepted, None if guard is None else guard.rule, len(result.clips_left_out),
        )


def load_model(name: str, path: Path, threads: int, guard: bool, greedy: bool = False) -> Model:
    """A checkpoint (``.pt``) or a bundle (directory or archive) named ``name``."""
    if path.is_dir() or is_archive(path):
        try:
            return BundleModel(name, path, threads, guard, greedy)
        except BundleError as error:
            raise EvalError(f"--model {name}: {error}") from None
    if not path.is_file():
        raise EvalError(f"--model {name}: {path}: no such checkpoint or bundle")
    try:
        return CheckpointModel(name, path)
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as error:
        raise EvalError(f"--model {name}: {path}: not a loadable checkpoint ({error})") from None


# Methods -----------------------------------------------------------------------------


@dataclass
class MethodPlan:
    """An adaptive method: the model it adapts and the rates it uses (``None``: the model's own)."""

    method: str
    model: str
    rates: float | None
    rate_source: str


def _scalar(model: Model, what: str) -> float:
    if model.scalar_rate is None:
        raise EvalError(f"{what}: model {model.name} ({model.path}) stores no scalar rate")
    return model.scalar_rate


def plan_method(method: str, models: dict[str, Model]) -> MethodPlan:
    """How ``method`` is evaluated with the models given; :class:`EvalError` when it cannot be."""
    if method in ("maml", "fomaml", "reptile", "meta-sgd"):
        if method not in models:
            raise EvalError(f"method {method} needs --model {method}=PATH")
        if not models[method].has_rates:
            raise EvalError(f"method {method}: model {method} ({models[method].path}) stores neither rates λ nor a scalar rate")
        return MethodPlan(method, method, None, f"{method}'s own rates")
    if method == "finetune":
        for name in ("finetune", "pretrained"):
            if name in models:
                rate = _scalar(models[name], "finetune (give --model finetune=PATH from 'edgemeta meta-train --method finetune')")
                return MethodPlan(method, name, rate, models[name].scalar_rate_source)
        raise EvalError("method finetune needs --model finetune=PATH or --model pretrained=PATH")
    if method == "ctc-control":
        if method not in models:
            raise EvalError("method ctc-control needs --model ctc-control=PATH ('edgemeta meta-train --method ctc-control')")
        return MethodPlan(method, method, _scalar(models[method], method), models[method].scalar_rate_source)
    if method == "meta-sgd-scalar":
        if "meta-sgd" not in models:
            raise EvalError("method meta-sgd-scalar needs --model meta-sgd=PATH")
        for name in ("meta-sgd", "finetune", "pretrained"):
            if name in models and models[name].scalar_rate is not None:
                return MethodPlan(method, "meta-sgd", models[name].scalar_rate, models[name].scalar_rate_source)
        raise EvalError("method meta-sgd-scalar needs a scalar rate: stored in the meta-sgd model, or a finetune/pretrained model with one")
    raise EvalError(f"unknown method {method!r} (choose from {', '.join(METHODS + CONTROLS)})")


def plan_methods(models: dict[str, Model], requested: list[str] | None) -> list[MethodPlan]:
    """Adaptive methods to run: those ``requested`` (all must be possible), or every one the given models allow."""
    if requested is not None:
        return [plan_method(m, models) for m in dict.fromkeys(requested) if m != "none"]
    candidates = [m for m in ("maml", "fomaml", "reptile", "meta-sgd", "ctc-control") if m in models]
    if "finetune" in models or "pretrained" in models:
        candidates.insert(0, "finetune")
    plans = []
    for method in candidates:
        try:
            plans.append(plan_method(method, models))
        except EvalError as error:
            print(f"note: {error}: not evaluated", file=sys.stderr)
    return plans


# Evaluation --------------------------------------------------------------------------


@dataclass
class Record:
    """One JSON line: a speaker's CER and WER on its scored clips."""

    dataset: str
    model: str
    method: str
    k: int
    speaker: str
    seed: int
    cer: float
    wer: float


@dataclass
class Enrolled:
    """Side facts of one adaptation, for the summary."""

    dataset: str
    model: str
    method: str
    k: int
    speaker: str
    seed: int
    adapted: bool
    guard_accepted: bool | None
    guard_rule: str | None
    clips_left_out: int
    seconds: float


def _record(dataset: str, model: str, method: str, k: int, speaker: str, seed: int, counts: ErrorCounts) -> Record:
    return Record(dataset, model, method, k, speaker, seed, round(counts.cer, 6), round(counts.wer, 6))


def protocol_notes(datasets: list[Dataset], models: dict[str, Model], ks: list[int]) -> list[str]:
    """How each model decodes, ks skipped for speakers with too few clips, and scored speakers a model was trained on (warnings)."""
    notes = [f"model {name} decodes {model.decoding}" for name, model in models.items()]
    for dataset in datasets:
        for k in ks:
            short = [s.speaker for s in dataset.speakers if k > len(s.pool)]
            if short:
                notes.append(f"{dataset.name}: k={k} skipped for {len(short)} speaker(s) with fewer adaptation clips: {', '.join(short)}")
        for name, model in models.items():
            seen = sorted(model.training_speakers & {s.speaker for s in dataset.speakers})
            if seen:
                notes.append(f"warning: {dataset.name}: {len(seen)} scored speaker(s) are among model {name}'s "
                             f"training speakers: {', '.join(seen)}")
    return notes


def evaluate(
    datasets: list[Dataset], models: dict[str, Model], plans: list[MethodPlan], ks: list[int], seeds: int
) -> tuple[list[Record], list[Enrolled]]:
    """Every record of the protocol and the side facts of every adaptation."""
    records: list[Record] = []
    enrolled: list[Enrolled] = []
    adaptive_ks = [k for k in ks if k > 0]
    total = sum(
        len(d.speakers) + seeds * sum(k <= len(s.pool) for s in d.speakers for k in adaptive_ks) * sum(p.model == name for p in plans)
        for d in datasets for name in models
    )
    bar = tqdm(total=total, desc="eval", unit="run", file=sys.stderr)
    for dataset in datasets:
        for name, model in models.items():
            own = [p for p in plans if p.model == name]
            for speaker in dataset.speakers:
                references = [u.text for u in speaker.scored]
                prepared = model.prepare(speaker.scored)
                base = score(references, model.transcribe(prepared, None))
                bar.update(1)
                for seed in range(seeds):
                    records.append(_record(dataset.name, name, "none", 0, speaker.speaker, seed, base))
                    if 0 in ks:
                        records += [_record(dataset.name, name, p.method, 0, speaker.speaker, seed, base) for p in own]
                    for k in adaptive_ks:
                        if k > len(speaker.pool):
                            continue
                        support = speaker.support(seed, k)
                        for plan in own:
                            started = time.perf_counter()
                            adaptation = model.adapt(support, plan.rates)
                            seconds = time.perf_counter() - started
                            counts = score(references, model.transcribe(prepared, adaptation.weights))
                            records.append(_record(dataset.name, name, plan.method, k, speaker.speaker, seed, counts))
                            enrolled.append(Enrolled(
                                dataset.name, name, plan.method, k, speaker.speaker, seed, adaptation.adapted,
                                adaptation.guard_accepted, adaptation.guard_rule, adaptation.clips_left_out, round(seconds, 4),
                            ))
                            bar.update(1)
    bar.close()
    return records, enrolled


# Report ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a dataset, model, method and k over speakers (seed-mean per speaker)."""

    dataset: str
    model: str
    method: str
    k: int
    speakers: int
    cer_mean: float
    cer_std: float
    cer_min: float
    cer_max: float
    wer_mean: float
    worse: float | None
    worse_draws: float | None
    guard_acceptance: float | None
    adapted: float | None
    seconds_per_adaptation: float | None


def summarize(records: list[Record], enrolled: list[Enrolled]) -> list[Row]:
    """Table rows by dataset, model, method (as first seen) and k: spread across speakers, "worse" against the model's k=0."""
    groups: dict[tuple[str, str, str, int], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    before: dict[tuple[str, str, str], float] = {}
    for r in records:
        groups[(r.dataset, r.model, r.method, r.k)][r.speaker].append(r)
        if r.method == "none":
            before[(r.dataset, r.model, r.speaker)] = r.cer
    facts: dict[tuple[str, str, str, int], list[Enrolled]] = defaultdict(list)
    for e in enrolled:
        facts[(e.dataset, e.model, e.method, e.k)].append(e)
    rows = []
    for (dataset, model, method, k), by_speaker in groups.items():
        cer = {s: float(np.mean([r.cer for r in rs])) for s, rs in by_speaker.items()}
        wer = [float(np.mean([r.wer for r in rs])) for rs in by_speaker.values()]
        values = np.array(list(cer.values()))
        worse = draws = None
        if k > 0:
            worse = float(np.mean([cer[s] > before[(dataset, model, s)] + WORSE_MARGIN for s in cer]))
            draws = float(np.mean([r.cer > before[(dataset, model, s)] + WORSE_MARGIN for s, rs in by_speaker.items() for r in rs]))
        runs = facts.get((dataset, model, method, k), [])
        guarded = [e.guard_accepted for e in runs if e.guard_accepted is not None]
        rows.append(Row(
            dataset, model, method, k, len(cer), float(values.mean()), float(values.std()), float(values.min()), float(values.max()),
            float(np.mean(wer)), worse, draws, float(np.mean(guarded)) if guarded else None,
            float(np.mean([e.adapted for e in runs])) if runs else None,
            float(np.mean([e.seconds for e in runs])) if runs else None,
        ))
    first = {key: {v: i for i, v in enumerate(dict.fromkeys(getattr(r, key) for r in records))} for key in ("dataset", "model", "method")}
    return sorted(rows, key=lambda r: (first["dataset"][r.dataset], first["model"][r.model], first["method"][r.method], r.k))


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[Row], guard: bool) -> str:
    """The table: one line per dataset × model/method × k."""
    header = ["dataset", "model", "method", "k", "speakers", "CER mean", "CER std", "CER min–max", "WER mean", "worse"]
    header += ["guard accepted"] if guard else []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r.dataset, r.model, r.method, str(r.k), str(r.speakers), _cell(r.cer_mean), _cell(r.cer_std),
                 f"{r.cer_min:.3f}–{r.cer_max:.3f}", _cell(r.wer_mean), _cell(r.worse, 2)]
        cells += [_cell(r.guard_acceptance, 2)] if guard else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_cer(rows: list[Row], png: Path) -> None:
    """CER (mean ± std across speakers) against k, one panel per dataset and one colour per model.

    A model's adaptive methods are solid lines (controls dash-dotted), its k=0 (``none``) a dashed horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    colours = {model: f"C{i % 10}" for i, model in enumerate(dict.fromkeys(r.model for r in rows))}
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r.dataset == dataset]
        for model, method in dict.fromkeys((r.model, r.method) for r in mine):
            line = [r for r in mine if (r.model, r.method) == (model, method)]
            if method == "none":
                axis.axhline(line[0].cer_mean, linestyle="--", linewidth=1, color=colours[model], label=f"none ({model}, k=0)")
                continue
            axis.errorbar([r.k for r in line], [r.cer_mean for r in line], yerr=[r.cer_std for r in line], marker="o", capsize=3,
                          color=colours[model], linestyle="-." if method in CONTROLS else "-",
                          label=method if model == method else f"{method} ({model})")
        axis.set_xticks(sorted({r.k for r in mine}))
        axis.set_xlabel("k (adaptation clips)")
        axis.set_ylabel("CER (mean over speakers)")
        axis.set_title(dataset)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)


def _guard_rules(enrolled: list[Enrolled]) -> dict[int, list[str]]:
    rules: dict[int, set[str]] = defaultdict(set)
    for e in enrolled:
        if e.guard_rule:
            rules[e.k].add(e.guard_rule)
    return {k: sorted(v) for k, v in sorted(rules.items())}


def report_markdown(rows: list[Row], guard: bool, seeds: int, rules: dict[int, list[str]], notes: list[str]) -> str:
    """The Markdown report: the table, how to read it and the notes."""
    text = [
        "# edgemeta eval", "", markdown_table(rows, guard), "",
        f"Per speaker: CER = Σ edits / Σ reference characters over its fixed scored clips (at most {SCORED_CLIPS}, "
        f"identical for every k, method and seed); mean over {seeds} seed(s) of the adaptation draw, then mean, std and "
        f"min–max across speakers. worse: fraction of speakers whose seed-mean CER exceeds the same model's k=0 CER + "
        f"{WORSE_MARGIN}.",
    ]
    if guard:
        text.append("guard accepted: fraction of bundle enrollments the device's guard accepted (— for checkpoints: no guard). "
                    "Guard rules used: " + "; ".join(r for by_k in rules.values() for r in by_k) + ".")
    text += [""] + [f"- {note}" for note in notes]
    return "\n".join(text).rstrip() + "\n"


def _outputs(out: Path) -> tuple[Path, Path, Path]:
    return out.with_suffix(".md"), out.with_suffix(".png"), out.with_suffix(".summary.json")


# CLI ---------------------------------------------------------------------------------


def _names(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return names


def _ks(value: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in _names(value)})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if ks[0] < 0:
        raise argparse.ArgumentTypeError("k must be >= 0")
    return ks


def _model(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    if name not in MODEL_NAMES:
        raise argparse.ArgumentTypeError(f"model name must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return name, Path(path)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


EXAMPLES = """\
examples:
  # the built-in bundle (as meta-sgd) on unseen voices, k = 0, 1, 5, 10, 3 seeds
  edgemeta eval --manifest data/flite/manifest.jsonl --json eval/flite.jsonl
  # baselines and Meta-SGD from checkpoints, on held-out real speakers and spoken digits (k up to 20 there)
  edgemeta eval --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
      --manifest ../shared/data/fsdd-dev/manifest.jsonl --k 0,1,5,10,20 \\
      --model pretrained=runs/pretrain/last.pt --model finetune=runs/finetune/last.pt \\
      --model meta-sgd=runs/meta-sgd/last.pt --model maml=runs/maml/last.pt --json eval/real.jsonl
  # the two controls: plain CTC for the same time, and the meta-trained init with a scalar rate
  edgemeta eval --manifest data/flite/manifest.jsonl --model finetune=runs/finetune/last.pt \\
      --model ctc-control=runs/ctc-control/last.pt --model meta-sgd=runs/meta-sgd/last.pt \\
      --methods none,finetune,ctc-control,meta-sgd,meta-sgd-scalar --json eval/controls.jsonl
  # a bundle as the device enrolls: clip checks and guard
  edgemeta eval --manifest data/flite/manifest.jsonl --model meta-sgd=bundles/mine --guard --json eval/guard.jsonl

writes OUT (JSON Lines), OUT with .md (the table), .png (CER against k) and .summary.json
(clip lists, rates, guard decisions, notes, timings). speechocean762-train is scored on its dev speakers only.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="k-shot adaptation per speaker: CER/WER for every model and method, table and plot",
        description="Measure k-shot speaker adaptation: per speaker a fixed scored set, adaptation clips drawn per seed; "
        "CER/WER per dataset, model, method, k, speaker and seed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--model", type=_model, action="append", default=[], metavar="NAME=PATH",
                        help=f"NAME one of {', '.join(MODEL_NAMES)}; PATH a checkpoint (.pt) or a bundle "
                             "(directory or archive); repeatable (default: the built-in bundle as meta-sgd)")
    parser.add_argument("--methods", type=_names, default=None,
                        help=f"comma-separated, from {', '.join(METHODS + CONTROLS)} (default: every method the models "
                             "allow, meta-sgd-scalar excepted); none is always reported")
    parser.add_argument("--k", type=_ks, default=[0, 1, 5, 10], help="adaptation clips, comma-separated (default: 0,1,5,10)")
    parser.add_argument("--seeds", type=_positive, default=3, help="draws of adaptation clips per speaker (default: 3)")
    parser.add_argument("--guard", action="store_true", help="bundles: clip checks and the guard, as the device enrolls")
    parser.add_argument("--greedy", action="store_true",
                        help="bundles: best-path decoding instead of their language model, as checkpoints decode (compares acoustic models)")
    parser.add_argument("--threads", type=_positive, default=1, help="torch and onnxruntime CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON Lines output, one record per run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``edgemeta eval`` from parsed arguments."""
    try:
        return _run(args)
    except EvalError as error:
        print(f"edgemeta eval: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.json.suffix in (".md", ".png"):
        raise EvalError(f"--json {args.json}: the table and plot are written beside OUT with .md and .png; give OUT another suffix")
    pairs = args.model or [("meta-sgd", BUILTIN_BUNDLE)]
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EvalError(f"--model {duplicated[0]} is given more than once")
    models = {name: load_model(name, path, args.threads, args.guard, args.greedy) for name, path in pairs}
    for name, model in models.items():
        if model.method is not None and name != "ctc-control" and model.method != name:
            print(f"note: --model {name}: {model.path} was trained as {model.method!r}", file=sys.stderr)
    if args.guard and any(m.kind == "checkpoint" for m in models.values()):
        print("note: --guard applies to bundles; checkpoints are adapted raw (the guard is the device's)", file=sys.stderr)
    plans = plan_methods(models, args.methods)
    folders = [m.resolve().parent.name for m in args.manifest]
    if len(set(folders)) < len(folders):
        raise EvalError(f"two manifests share the folder name {sorted(f for f in folders if folders.count(f) > 1)[0]!r}, "
                        "which names their dataset")
    datasets = [load_dataset(m) for m in args.manifest]
    notes = [note for d in datasets for note in d.notes] + protocol_notes(datasets, models, args.k)
    for note in notes:
        print(note, file=sys.stderr)
    loaded = time.perf_counter()
    records, enrolled = evaluate(datasets, models, plans, args.k, args.seeds)

    rows = summarize(records, enrolled)
    rules = _guard_rules(enrolled)
    report = report_markdown(rows, args.guard, args.seeds, rules, notes)
    md, png, summary = _outputs(args.json)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records), encoding="utf-8")
    md.write_text(report, encoding="utf-8")
    plot_cer(rows, png)
    summary.write_text(json.dumps({
        "models": {n: {"path": str(m.path), "kind": m.kind, "trained_as": m.method} for n, m in models.items()},
        "methods": [asdict(p) for p in plans],
        "k": args.k, "seeds": args.seeds, "guard": args.guard, "worse_margin": WORSE_MARGIN,
        "guard_rules": rules,
        "datasets": {d.name: {
            "manifest": str(d.manifest),
            "speakers": {s.speaker: {
                "clips": len(s.scored) + len(s.pool),
                "scored": [s.names[u.source] for u in s.scored],
                "adaptation": {seed: [s.names[u.source] for u in s.support(seed, max(args.k))] for seed in range(args.seeds)},
            } for s in d.speakers},
        } for d in datasets},
        "rows": [asdict(r) for r in rows],
        "enrollments": [asdict(e) for e in enrolled],
        "notes": notes,
        "seconds": {"loading": round(loaded - started, 2), "evaluation": round(time.perf_counter() - loaded, 2)},
    }, indent=1), encoding="utf-8")
    print(markdown_table(rows, args.guard))
    print(f"wrote {args.json}, {md}, {png}, {summary} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
