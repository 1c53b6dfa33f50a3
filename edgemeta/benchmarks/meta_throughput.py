"""Meta-training throughput: our functional loop against a naive per-task deep-copy loop, side by side.

Both loops run the same algorithm on the same model, episodes and optimizer:
first-order MAML with the head adapted for S steps at a scalar rate and the
query loss trained into body and head by AdamW (``--frozen-body``: head only).

- **ours**: :meth:`edgemeta.meta_train.MetaTrainer.step` — the body runs once
  per meta-batch over all episodes' clips, the head adapts as tensors through
  ``torch.func.functional_call``. With a frozen body each clip's features are
  computed once and cached, as ``meta-train --freeze-body`` does; the
  benchmark fills that cache before timing (the steady state of a run that
  has seen every clip once);
- **naive** (how older meta-learning libraries work): per task,
  ``copy.deepcopy(model)``; each inner step runs the whole copy on the support
  clips and steps its head in place (gradients of the head only); the query
  loss is back-propagated through the copy and its gradients added to the
  model's.

Steps of the two loops alternate, so both see the same machine load. Example::

    python -m edgemeta.benchmarks.meta_throughput --init runs/pretrain/last.pt --steps 4 --threads 1
    python -m edgemeta.benchmarks.meta_throughput --frozen-body --json throughput.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from edgemeta.batching import pad_audio, pad_targets
from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import Utterance
from edgemeta.meta_learning import encode_clips
from edgemeta.distributed import Ranks
from edgemeta.meta_train import DEFAULT_INNER_RATE, MetaTrainConfig, MetaTrainer, load_tasks
from edgemeta.model import ModelConfig, SpeechRecognizer
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.ctc_loss import ctc_loss
from edgemeta.runtime.update_rule import adapt
from edgemeta.speaker_tasks import Episode, Task, speaker_tasks

SYNTHETIC_TEXT = "please call stella ask her to bring these things"


def synthetic_tasks(speakers: int, clips: int, seconds: float, seed: int = 0) -> list[Task]:
    """Noise clips of speech-like length and transcript length, for a machine without the shared corpus."""
    rng = np.random.default_rng(seed)
    utterances = [
        Utterance((0.1 * rng.standard_normal(int(SAMPLE_RATE * seconds * rng.uniform(0.7, 1.3)))).astype(np.float32),
                  SYNTHETIC_TEXT[: int(rng.integers(20, 45))].strip(), f"s{s}", f"s{s}/{i}")
        for s in range(speakers) for i in range(clips)
    ]
    return speaker_tasks(utterances, clips)


def _ctc(model: SpeechRecognizer, utterances: list[Utterance]) -> torch.Tensor:
    waveforms, lengths = pad_audio([u.audio for u in utterances])
    targets, target_lengths = pad_targets([u.text for u in utterances])
    log_probs = model(waveforms, lengths)
    return ctc_loss(log_probs, targets, model.frame_lengths(lengths), target_lengths)


def naive_step(model: SpeechRecognizer, optimizer: torch.optim.Optimizer, episodes: list[Episode], config: MetaTrainConfig) -> None:
    """One first-order MAML meta-step the deep-copy way."""
    optimizer.zero_grad()
    for episode in episodes:
        clone = copy.deepcopy(model)
        adapt(dict(clone.head.named_parameters()), lambda _: _ctc(clone, episode.support), config.inner_rate, config.inner_steps, in_place=True)
        (_ctc(clone, episode.query) / len(episodes)).backward()
        for param, copied in zip(model.parameters(), clone.parameters()):
            if copied.grad is not None:
                param.grad = copied.grad if param.grad is None else param.grad + copied.grad
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.clip_norm)
    optimizer.step()


def measure(model: SpeechRecognizer, tasks: list[Task], config: MetaTrainConfig, steps: int) -> dict[str, float]:
    """Seconds per meta-step of both loops (after one warm-up step each) and tasks per second."""
    ours_model, naive_model = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    trainer = MetaTrainer(config, ours_model, tasks, [], Ranks())
    if trainer.cache is not None:
        with torch.no_grad():
            encode_clips(trainer.part, [u for task in tasks for u in task.utterances], trainer.cache)
    for param in naive_model.parameters():
        param.requires_grad_(not config.freeze_body)
    naive_model.head.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in naive_model.parameters() if p.requires_grad], lr=config.outer_lr)
    seconds = {"ours": 0.0, "naive": 0.0}
    for step in range(steps + 1):
        episodes = trainer.sampler.meta_batch(step, config.meta_batch)
        started = time.perf_counter()
        trainer.step(step, 0.0)
        middle = time.perf_counter()
        naive_step(naive_model, optimizer, episodes, config)
        if step > 0:  # step 0 warms up allocators and caches
            seconds["ours"] += middle - started
            seconds["naive"] += time.perf_counter() - middle
    tasks_done = steps * config.meta_batch
    result = {f"{name}_tasks_per_s": tasks_done / s for name, s in seconds.items()}
    result["speedup"] = seconds["naive"] / seconds["ours"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Example::")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", help="checkpoint whose model to use (default: a fresh default-size model)")
    parser.add_argument("--synthetic", action="store_true", help="noise clips instead of speechocean762-train's speakers")
    parser.add_argument("--steps", type=int, default=3, help="measured meta-steps per loop (default: %(default)s)")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--frozen-body", action="store_true", help="adapt and meta-train the head only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = model_from_checkpoint(load_checkpoint(args.init)) if args.init else SpeechRecognizer(ModelConfig())
    config = MetaTrainConfig(method="fomaml", inner_rate=DEFAULT_INNER_RATE, k=args.k, query=args.query, meta_batch=args.meta_batch, inner_steps=args.inner_steps,
                             freeze_body=args.frozen_body, threads=args.threads)
    tasks = synthetic_tasks(16, args.k + args.query, 3.5) if args.synthetic else load_tasks(config)[0]
    if not tasks:
        parser.error("no tasks: speechocean762-train is not in ../shared/data; use --synthetic")
    result = measure(model, tasks, config, args.steps)
    setting = {"frozen_body": args.frozen_body, "meta_batch": args.meta_batch, "k": args.k, "query": args.query,
               "inner_steps": args.inner_steps, "threads": args.threads, "data": "synthetic" if args.synthetic else "speechocean762-train",
               "model_parameters": sum(p.numel() for p in model.parameters())}
    print("| loop | tasks/s |\n|---|---|")
    print(f"| ours (functional, body once per meta-batch) | {result['ours_tasks_per_s']:.3f} |")
    print(f"| naive (deep copy per task) | {result['naive_tasks_per_s']:.3f} |")
    print(f"\nspeed-up: {result['speedup']:.2f}x  ({json.dumps(setting)})")
    if args.json:
        write_json(args.json, {**setting, **result}, provenance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
