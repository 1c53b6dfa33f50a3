"""Adam fine-tuning of the head, rate and S tuned on dev speakers, beside checkpoints adapted by their own device rule.

The device adapts by edgemeta's update rule (``sgd`` or ``normalized``,
runtime/update_rule.py); Adam is not a device rule, so it is measured here in
PyTorch: ``torch.optim.Adam`` on the head of ``--init`` only (body frozen, the
support clips' features computed once), the loss the device's CTC loss
(:func:`~edgemeta.meta_learning.task_loss`), one trajectory of max(S) steps
per rate scored after each S. Each ``--compare`` checkpoint adapts with its own
stored rule, rates and S, exactly as ``edgemeta eval`` adapts a checkpoint
(:class:`~edgemeta.evaluation.models.CheckpointModel`; k=0 with its zero-shot
head where it has one). Scored clips and support draws are ``edgemeta eval``'s
protocol (a fixed scored set per speaker, seed ``--seed``'s first k pool
clips); speechocean762-train keeps its committed dev speakers (``--split test``:
its test speakers). Greedy decoding, CER = Σ edits / Σ characters. Example::

    OMP_NUM_THREADS=1 python -m edgemeta.benchmarks.adam_finetune --init runs/mismatch/builtin.pt \\
        --compare meta-sgd=runs/mismatch-1/last.pt --manifest ../shared/data/fsdd-dev/manifest.jsonl \\
        --k 10 --json reports/adam-finetune.json
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.evaluation.datasets import SpeakerClips, load_dataset, under_conditions
from edgemeta.evaluation.models import CheckpointModel
from edgemeta.meta_learning import AdaptedPart, ClipBatch, Params, encode_clips, pooled_cer, task_loss
from edgemeta.runtime.metrics import ErrorCounts, score

BASE = "init k=0"


def _list(kind: type):
    return lambda text: [kind(x) for x in text.split(",")]


def adam_trajectory(part: AdaptedPart, head: Params, support: ClipBatch, lr: float, steps: list[int]) -> tuple[dict[int, Params], list[float]]:
    """Adam from ``head`` (module names) on ``support``: the head after each S in ``steps`` and the loss before each step."""
    params = {name: p.detach().clone().requires_grad_() for name, p in head.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    heads, losses = {}, []
    for step in range(1, max(steps) + 1):
        optimizer.zero_grad()
        loss = task_loss(part, params, support)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in steps:
            heads[step] = {name: p.detach().clone() for name, p in params.items()}
    return heads, losses


def speaker_errors(init: CheckpointModel, compares: dict[str, CheckpointModel], speaker: SpeakerClips, k: int, seed: int,
                   lrs: list[float], steps: list[int]) -> dict[str, ErrorCounts]:
    """One speaker's errors on its scored clips per setting: k=0 and Adam from ``init``, k=0 and own-rule adaptation of each compare model."""
    support, references = speaker.support(seed, k), [u.text for u in speaker.scored]
    with torch.no_grad():
        batch = encode_clips(init.part, support)
    errors, prepared = {}, init.prepare(speaker.scored)
    errors[BASE] = score(references, init.transcribe(prepared, None))
    for lr in lrs:
        for s, head in adam_trajectory(init.part, init.part.params(), batch, lr, steps)[0].items():
            errors[f"adam lr={lr:g} S={s}"] = score(references, init.transcribe(prepared, init.part.full_names(head)))
    for name, model in compares.items():
        prepared = model.prepare(speaker.scored)
        errors[f"{name} k=0"] = score(references, model.transcribe(prepared, None))
        errors[name] = score(references, model.transcribe(prepared, model.adapt(support, None).weights))
    return errors


def summarize(per_speaker: dict[str, dict[str, ErrorCounts]]) -> dict[str, dict]:
    """Per setting: pooled CER, mean per-speaker CER and the speakers more than 0.01 worse than the init's k=0."""
    rows = {}
    for setting in next(iter(per_speaker.values())):
        counts = {speaker: errors[setting] for speaker, errors in per_speaker.items()}
        worse = sorted(s for s, c in counts.items() if c.cer > per_speaker[s][BASE].cer + 0.01)
        rows[setting] = {"pooled_cer": round(pooled_cer(list(counts.values())), 4),
                         "mean_speaker_cer": round(sum(c.cer for c in counts.values()) / len(counts), 4),
                         "speakers_worse": len(worse), "worse": worse}
    return rows


def best_adam(rows: dict[str, dict]) -> str:
    return min((s for s in rows if s.startswith("adam ")), key=lambda s: (rows[s]["pooled_cer"], s))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Example::")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", type=Path, required=True, help="checkpoint whose head Adam starts from (and whose body it uses)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="a checkpoint adapted with its own rule, rates and S (repeatable)")
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="one task per speaker (repeatable)")
    parser.add_argument("--split", choices=("dev", "test"), default="dev", help="speechocean762-train speakers scored (default: dev)")
    parser.add_argument("--conditions", type=int, default=0, metavar="N", help="each speaker under N recording conditions (as eval)")
    parser.add_argument("--k", type=int, default=10, help="support clips per speaker (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which draw of support clips (eval's seeds; default: %(default)s)")
    parser.add_argument("--lrs", type=_list(float), default=[3e-4, 1e-3, 3e-3, 1e-2], help="Adam learning rates")
    parser.add_argument("--steps", type=_list(int), default=[5, 10, 20], help="S values scored (one trajectory per rate)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    torch.set_num_threads(args.threads)
    init = CheckpointModel("init", args.init)
    if init.part.scope != "head":
        parser.error(f"--init {args.init}: scope {init.part.scope}; Adam here adapts the head only")
    compares = {name: CheckpointModel(name, Path(path)) for name, _, path in (c.partition("=") for c in args.compare)}
    datasets = [load_dataset(m, split=args.split) for m in args.manifest]
    datasets = [under_conditions(d, args.conditions) if args.conditions else d for d in datasets]
    per_speaker: dict[str, dict[str, dict[str, ErrorCounts]]] = defaultdict(dict)
    notes = [note for d in datasets for note in d.notes]
    with tqdm(total=sum(len(d.speakers) for d in datasets), desc="adam-finetune", unit="speaker", file=sys.stderr, disable=None) as bar:
        for dataset in datasets:
            for speaker in dataset.speakers:
                if args.k > len(speaker.pool):
                    notes.append(f"{dataset.name}: speaker {speaker.speaker} skipped ({len(speaker.pool)} pool clips < k)")
                else:
                    per_speaker[dataset.name][speaker.speaker] = speaker_errors(init, compares, speaker, args.k, args.seed, args.lrs, args.steps)
                bar.update()
    tables = {name: summarize(speakers) for name, speakers in per_speaker.items()}
    overall = summarize({f"{d}/{s}": e for d, speakers in per_speaker.items() for s, e in speakers.items()})
    result = {
        "init": str(args.init), "compare": {name: str(m.path) for name, m in compares.items()}, "k": args.k, "seed": args.seed,
        "split": args.split, "conditions": args.conditions, "lrs": args.lrs, "steps": args.steps, "threads": args.threads, "notes": notes,
        "datasets": {name: {"speakers": len(per_speaker[name]), "best_adam": best_adam(rows), "settings": rows} for name, rows in tables.items()},
        "overall": {"best_adam": best_adam(overall), "settings": overall},
        "per_speaker_cer": {name: {s: {k: round(c.cer, 4) for k, c in e.items()} for s, e in speakers.items()} for name, speakers in per_speaker.items()},
    }
    chosen = result["overall"]["best_adam"]
    columns = [BASE, chosen, *(f"{n}{suffix}" for n in compares for suffix in (" k=0", ""))]
    print(f"| dataset | {' | '.join(columns)} | best Adam per dataset |\n|---|{'---|' * (len(columns) + 1)}")
    for name, entry in [*result["datasets"].items(), ("overall", result["overall"])]:
        cells = [f"{entry['settings'][c]['pooled_cer']:.3f} ({entry['settings'][c]['speakers_worse']} worse)" for c in columns]
        print(f"| {name} | {' | '.join(cells)} | {entry['best_adam']}: {entry['settings'][entry['best_adam']]['pooled_cer']:.3f} |")
    if args.json:
        write_json(args.json, result, provenance)
    return result


if __name__ == "__main__":
    main()
