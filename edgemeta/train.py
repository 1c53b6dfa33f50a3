"""Pretraining: multi-speaker CTC training on any mix of manifests, synthetic and real.

This is the pretraining stage and the fine-tuning baseline's starting point.
SpecAugment is on by default; waveform augmentation (speed perturbation and random
channels) is opt-in, because on speechocean762 it slowed learning more than it
helped the held-out speakers (BENCHMARKS.md, "Pretraining settings"): the
synthetic corpus already carries noise, rooms and band limits.
The learning-rate schedule is a warm-up followed by a cosine over the *wall-time*
budget (``--minutes``), so a run fits its budget on any machine; elapsed time is
checkpointed, and a resumed run continues the same schedule.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch.nn import functional as F
from tqdm import tqdm

from edgemeta.augment import random_augment
from edgemeta.batching import length_buckets, pad_audio, pad_targets
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint, save_checkpoint
from edgemeta.corpus import DEFAULT_LANGUAGE, Utterance, corpus_languages, load_corpus, speakers_of
from edgemeta.encoder_cache import CachedClips, cached_encoder_outputs
from edgemeta.model import BODIES, WHISPER_TINY_EN, ModelConfig, SpeechRecognizer, new_model
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.ctc_decode import greedy_decode_batch
from edgemeta.runtime.ctc_loss import ctc_loss, min_frames
from edgemeta.runtime.metrics import score
from edgemeta.runtime.text import encode
from edgemeta.splits import dev_speakers, held_out_speakers, shared_corpus

log = logging.getLogger(__name__)
SPEECHOCEAN = "speechocean762-train"
SPEECHOCEAN_ATTRIBUTION = (
    "speechocean762 (Zhang et al., Interspeech 2021), https://github.com/jimbozhang/speechocean762, CC BY 4.0"
)


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; saved in its checkpoints."""

    manifests: list[str] = field(default_factory=list)
    speechocean: bool = True
    out: str = "runs/pretrain"
    minutes: float = 45.0
    max_steps: int | None = None
    lr: float = 1.5e-3
    schedule: str = "cosine"
    warmup_steps: int = 150
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    batch_seconds: float = 50.0
    augment: bool = False
    channel_probability: float = 0.2
    spec_augment: bool = True
    cache_variants: int = 2  # whisper body: augmented variants cached per training clip besides the clean one
    encoder_lr_scale: float = 0.1  # whisper body's trained blocks: their rate relative to lr (no weight decay)
    dev_every_minutes: float = 5.0
    checkpoint_every_minutes: float = 2.0
    dev_clips_per_speaker: int = 5
    target_train_cer: float | None = None
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    model: dict = field(default_factory=dict)


@dataclass
class TrainData:
    train: list[Utterance]
    dev: list[Utterance]
    sources: list[str]


def load_training_data(config: TrainConfig) -> TrainData:
    """Training utterances (manifests + speechocean762 minus its held-out speakers) and a dev subset (dev speakers only)."""
    train, dev, sources = [], [], []
    for manifest in config.manifests:
        train += load_corpus(manifest)
        sources.append(str(manifest))
    speechocean = shared_corpus(SPEECHOCEAN) if config.speechocean else None
    if speechocean is not None:
        train += load_corpus(speechocean, exclude_speakers=held_out_speakers())
        dev_all = load_corpus(speechocean, include_speakers=dev_speakers())
        per_speaker: dict[str, int] = {}
        for utterance in dev_all:
            if per_speaker.setdefault(utterance.speaker, 0) < config.dev_clips_per_speaker:
                dev.append(utterance)
                per_speaker[utterance.speaker] += 1
        sources.append(f"{SPEECHOCEAN}: {SPEECHOCEAN_ATTRIBUTION}")
    if not train:
        raise ValueError("no training clips: give --manifest files or make ../shared/data/speechocean762-train available")
    if config.target_train_cer is not None or not dev:
        dev = train[:: max(1, len(train) // 64)]
    return TrainData(train, dev, sources)


@torch.no_grad()
def feature_statistics(model: SpeechRecognizer, utterances: list[Utterance], rng: np.random.Generator, clips: int = 300) -> None:
    """Set the frontend's per-mel mean and std from a sample of training clips."""
    chosen = rng.choice(len(utterances), size=min(clips, len(utterances)), replace=False)
    frames = torch.cat([
        model.frontend.log_mel(F.pad(torch.from_numpy(utterances[i].audio)[None], (model.frontend.context, 0)))[0].T
        for i in chosen
    ])
    model.frontend.feature_mean.copy_(frames.mean(0))
    model.frontend.feature_std.copy_(frames.std(0).clamp_min(1e-3))


@torch.no_grad()
def transcribe_utterances(model: SpeechRecognizer, utterances: list[Utterance], batch_seconds: float = 60.0) -> list[str]:
    """Greedy transcripts of utterances with the PyTorch model, in input order."""
    model.eval()
    device = next(model.parameters()).device
    hypotheses: dict[int, str] = {}
    lengths = [len(u.audio) for u in utterances]
    for batch in length_buckets(lengths, int(batch_seconds * SAMPLE_RATE), np.random.default_rng(0)):
        waveforms, sample_lengths = pad_audio([utterances[i].audio for i in batch])
        log_probs = model(waveforms.to(device), sample_lengths.to(device)).cpu()
        texts = greedy_decode_batch(log_probs.numpy(), model.frame_lengths(sample_lengths).numpy())
        hypotheses.update(zip(batch, texts))
    return [hypotheses[i] for i in range(len(utterances))]


def corpus_cer(model: SpeechRecognizer, utterances: list[Utterance]) -> float:
    """CER of greedy transcripts over ``utterances`` (sum of edits / sum of reference characters)."""
    return score([u.text for u in utterances], transcribe_utterances(model, utterances)).cer


class SpecAugment(torch.nn.Module):
    """Two feature masks (up to ``feature_mask`` mel bins or encoder channels) and two time masks (up to 5 % of frames)."""

    def __init__(self, feature_mask: int = 15) -> None:
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(feature_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(40, iid_masks=True, p=0.05)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [batch, mels, frames]
        x = features.unsqueeze(1)
        for mask in (self.freq, self.freq, self.time, self.time):
            x = mask(x)
        return x.squeeze(1)


def learning_rate(config: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over steps, then cosine decay over the wall-time (or step) budget, or constant."""
    warmup = min(1.0, (step + 1) / config.warmup_steps)
    if config.schedule == "constant":
        return config.lr * warmup
    progress = elapsed / (config.minutes * 60)
    if config.max_steps:
        progress = max(progress, step / config.max_steps)
    return config.lr * warmup * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: SpeechRecognizer, config: TrainConfig) -> list[dict]:
    """AdamW groups: everything but the trained whisper encoder blocks, then those blocks (pretrained weights:
    ``encoder_lr_scale`` of the rate, no decay towards zero); each group's ``lr_scale`` multiplies the schedule."""
    trained_encoder = {name for name, p in model.named_parameters() if p.requires_grad and name.startswith("whisper.")}
    encoder = [p for name, p in model.named_parameters() if name in trained_encoder]
    rest = [p for name, p in model.named_parameters() if name not in trained_encoder]  # frozen ones get no gradient
    groups = [{"params": rest, "lr_scale": 1.0}]
    if encoder:
        groups.append({"params": encoder, "lr_scale": config.encoder_lr_scale, "weight_decay": 0.0})
    return groups


def ctc_batch_loss(model: SpeechRecognizer, waveforms, lengths, texts, spec_augment: SpecAugment | None) -> torch.Tensor:
    """Mean CTC loss of a padded batch (SpecAugment on the normalised log-mel when given)."""
    features = model.log_mel(waveforms)
    if spec_augment is not None:
        features = spec_augment(features)
    return features_ctc_loss(model, features, model.frame_lengths(lengths), texts)


def features_ctc_loss(model: SpeechRecognizer, features: torch.Tensor, frame_lengths: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Mean CTC loss of a batch of :meth:`SpeechRecognizer.acoustic_features` with ``frame_lengths`` output frames."""
    log_probs = F.log_softmax(model.head(model.encode(features, frame_lengths)), dim=-1)
    targets, target_lengths = (t.to(log_probs.device) for t in pad_targets(texts))
    return ctc_loss(log_probs, targets, frame_lengths, target_lengths)


def cached_ctc_loss(model: SpeechRecognizer, cached: CachedClips, indices: list[int], variants: list[int],
                    spec_augment: SpecAugment | None) -> torch.Tensor:
    """Mean CTC loss of cached encoder outputs (clip ``indices[i]`` under variant ``variants[i]``), masked when given."""
    features, frame_lengths = cached.batch(indices, variants)
    device = next(model.parameters()).device
    if spec_augment is not None:
        features = spec_augment(features.transpose(1, 2)).transpose(1, 2)
    return features_ctc_loss(model, features.to(device), frame_lengths.to(device), [cached.utterances[i].text for i in indices])


@torch.no_grad()
def cached_cer(model: SpeechRecognizer, cached: CachedClips, batch_frames: int = 3000) -> float:
    """CER of greedy transcripts of the clean cached encoder outputs (sum of edits / sum of reference characters)."""
    model.eval()
    device = next(model.parameters()).device
    lengths = [cached.frame_count(i) for i in range(len(cached.utterances))]
    hypotheses: dict[int, str] = {}
    for batch in length_buckets(lengths, batch_frames, np.random.default_rng(0)):
        features, frame_lengths = cached.batch(batch)
        log_probs = F.log_softmax(model.head(model.encode(features.to(device), frame_lengths)), dim=-1).cpu()
        hypotheses.update(zip(batch, greedy_decode_batch(log_probs.numpy(), frame_lengths.numpy())))
    return score([u.text for u in cached.utterances], [hypotheses[i] for i in range(len(lengths))]).cer


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Run (or resume) pretraining; returns the path of the last checkpoint."""
    torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_training_data(config)
    speakers = speakers_of(data.train)
    resume = out / "last.pt"
    if resume.is_file():
        checkpoint = load_checkpoint(resume)
        model = model_from_checkpoint(checkpoint)
        state = checkpoint["state"]
        log.info("resuming %s at step %d (%.1f min)", resume, state["step"], state["elapsed"] / 60)
    else:
        torch.manual_seed(config.seed)
        model = new_model(ModelConfig(**config.model))
        if model.config.body != WHISPER_TINY_EN:
            feature_statistics(model, data.train, np.random.default_rng(config.seed))
        state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best_dev_cer": None, "optimizer": None}
    device = torch.device(config.device)
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    spec_augment = SpecAugment() if config.spec_augment else None
    lengths = [len(u.audio) for u in data.train]
    batch_budget = int(config.batch_seconds * SAMPLE_RATE)
    whisper = model.config.body == WHISPER_TINY_EN
    if whisper:  # the frozen encoder's outputs are read from the cache: a step costs only the GRU and the head
        train_cache = cached_encoder_outputs(model, data.train, config.cache_variants, progress=progress)
        dev_cache = cached_encoder_outputs(model, data.dev, progress=progress)
        lengths = [train_cache.frame_count(i) for i in range(len(data.train))]
        batch_budget = int(config.batch_seconds * model.config.sample_rate) // model.config.hop_length // 2
        spec_augment = SpecAugment(feature_mask=model.config.encoder_config.width // 8) if config.spec_augment else None
    # whisper tiny.en's encoder was pretrained on English speech besides what this run trains on
    languages = sorted(set(corpus_languages(data.train + data.dev)) | ({DEFAULT_LANGUAGE} if whisper else set()))
    unalignable = sum(int(model.frame_lengths(torch.tensor(len(u.audio)))) < min_frames(encode(u.text)) for u in data.train)
    log.info("%d training clips (%.2f h, %d speakers), %d dev clips; %d clips too short for CTC alignment",
             len(data.train), sum(len(u.audio) for u in data.train) / SAMPLE_RATE / 3600, len(speakers), len(data.dev), unalignable)
    metrics_file = (out / "metrics.jsonl").open("a")

    def save(name: str) -> None:
        state["optimizer"] = optimizer.state_dict()
        provenance = {"recipe": "pretrain", "data": data.sources, "languages": languages, "config": asdict(config),
                      "training_seconds": state["elapsed"]}
        save_checkpoint(out / name, new_checkpoint(model, "pretrained", 3, speakers, provenance=provenance, state=state))

    def evaluate_dev() -> float:
        dev_cer = cached_cer(model, dev_cache) if whisper else corpus_cer(model, data.dev)
        model.train()
        record = {"step": state["step"], "elapsed": round(state["elapsed"], 1), "dev_cer": round(dev_cer, 4)}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        if state["best_dev_cer"] is None or dev_cer < state["best_dev_cer"]:
            state["best_dev_cer"] = dev_cer
            save("best.pt")
        return dev_cer

    by_steps = config.max_steps is not None  # the bar counts what ends the run: steps, or seconds of the budget

    def position() -> int:
        return state["step"] if by_steps else int(state["elapsed"])

    bar = tqdm(total=config.max_steps if by_steps else int(config.minutes * 60), initial=position(),
               unit="step" if by_steps else "s", desc="pretrain", disable=not progress)
    last_dev = last_save = state["elapsed"]
    dev_cer, done = state["best_dev_cer"], False
    model.train()
    while not done:
        batches = length_buckets(lengths, batch_budget, np.random.default_rng([config.seed, state["epoch"]]))
        while state["batch"] < len(batches):
            started = time.monotonic()
            rng = np.random.default_rng([config.seed, state["step"]])
            torch.manual_seed(config.seed * 100_003 + state["step"])
            batch = [data.train[i] for i in batches[state["batch"]]]
            if whisper:  # a random cached variant of each clip (clean or augmented)
                variants = rng.integers(len(train_cache.variants), size=len(batch)).tolist()
                loss = cached_ctc_loss(model, train_cache, batches[state["batch"]], variants, spec_augment)
            else:
                audios = [random_augment(u.audio, rng, p=config.channel_probability) if config.augment else u.audio for u in batch]
                waveforms, sample_lengths = pad_audio(audios)
                loss = ctc_batch_loss(model, waveforms.to(device), sample_lengths.to(device), [u.text for u in batch], spec_augment)
            for group in optimizer.param_groups:
                # A run saved before groups had scales has one group, at the full rate.
                group["lr"] = group.get("lr_scale", 1.0) * learning_rate(config, state["step"], state["elapsed"])
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            state["step"] += 1
            state["batch"] += 1
            state["elapsed"] += time.monotonic() - started
            bar.update(position() - bar.n)
            bar.set_postfix(step=state["step"], loss=f"{loss.item():.3f}", dev_cer=dev_cer if dev_cer is None else f"{dev_cer:.3f}")
            if state["step"] % 20 == 0:
                metrics_file.write(json.dumps({"step": state["step"], "elapsed": round(state["elapsed"], 1), "loss": round(loss.item(), 4),
                                               "grad_norm": round(float(grad_norm), 3), "lr": optimizer.param_groups[0]["lr"]}) + "\n")
            out_of_budget = state["elapsed"] >= config.minutes * 60 or (config.max_steps and state["step"] >= config.max_steps)
            if config.target_train_cer is not None and state["step"] % 25 == 0:
                dev_cer = evaluate_dev()
                out_of_budget = out_of_budget or dev_cer <= config.target_train_cer
            elif state["elapsed"] - last_dev >= config.dev_every_minutes * 60 or out_of_budget:
                dev_cer, last_dev = evaluate_dev(), state["elapsed"]
            if state["elapsed"] - last_save >= config.checkpoint_every_minutes * 60 or out_of_budget:
                save("last.pt")
                last_save = state["elapsed"]
            if out_of_budget:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    metrics_file.close()
    return out / "last.pt"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta train``."""
    parser = subparsers.add_parser(
        "train",
        help="pretrain a CTC recognizer on manifests (synthetic and real)",
        description="Multi-speaker CTC pretraining with SpecAugment (waveform augmentation on request). "
                    "Resumes from OUT/last.pt if present; a resumed run takes the settings given now.",
        epilog="examples:\n  edgemeta train --manifest data/synth/manifest.jsonl --out runs/pretrain --minutes 45\n"
               "  # GRU + head on whisper tiny.en's frozen encoder, trained on its cached outputs (clean + 2 augmented variants)\n"
               "  edgemeta train --body whisper-tiny.en --out runs/whisper/pretrain --minutes 20 --threads 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", action="append", default=[], help="JSONL manifest to train on (repeatable)")
    parser.add_argument("--no-speechocean", action="store_true", help=f"do not add ../shared/data/{SPEECHOCEAN} (its dev speakers are never used)")
    parser.add_argument("--out", default="runs/pretrain", help="run folder: checkpoints last.pt and best.pt, metrics.jsonl")
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-time budget (default: 45)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--lr", type=float, default=1.5e-3, help="peak AdamW learning rate")
    parser.add_argument("--batch-seconds", type=float, default=50.0, help="audio seconds per batch, padding included")
    parser.add_argument("--augment", action="store_true", help="speed perturbation and random channels on the fly (off by default)")
    parser.add_argument("--channel-probability", type=float, default=0.2,
                        help="with --augment: chance that a clip gets a random channel (noise, room, band limit, gain) "
                             "on top of speed perturbation")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                        help="learning rate after warm-up: cosine over the budget, or constant (default: cosine)")
    parser.add_argument("--dev-every", type=float, default=5.0, help="minutes of training between dev CER measurements")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=json.loads, default={}, help='ModelConfig overrides as JSON, e.g. \'{"channels": 192}\'')
    parser.add_argument("--body", choices=BODIES, default=None, help="the body (overrides --model's; default: cnn-gru)")
    parser.add_argument("--cache-variants", type=int, default=2,
                        help=f"{WHISPER_TINY_EN} body: augmented variants of each training clip cached beside the clean one (default: 2)")
    parser.add_argument("--train-encoder-blocks", type=int, default=None,
                        help=f"{WHISPER_TINY_EN} body: train its last N encoder blocks too (the cache then holds the "
                             "frozen blocks' outputs; default 0: frozen)")
    parser.add_argument("--encoder-lr-scale", type=float, default=0.1,
                        help="the trained encoder blocks' learning rate as a fraction of --lr (default: 0.1)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TrainConfig(
        manifests=args.manifest, speechocean=not args.no_speechocean, out=args.out, minutes=args.minutes,
        max_steps=args.steps, lr=args.lr, schedule=args.schedule, batch_seconds=args.batch_seconds,
        augment=args.augment, channel_probability=args.channel_probability, dev_every_minutes=args.dev_every,
        threads=args.threads, device=args.device, seed=args.seed, cache_variants=args.cache_variants,
        encoder_lr_scale=args.encoder_lr_scale,
        model={**args.model, **({"body": args.body} if args.body else {}),
               **({"train_encoder_blocks": args.train_encoder_blocks} if args.train_encoder_blocks is not None else {})},
    )
    print(train(config))
    return 0
