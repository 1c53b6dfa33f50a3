"""``edgemeta eval``: the command line, from arguments to the JSON Lines, Markdown, PNG and summary files."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from edgemeta.adaptation_methods import ADAPTATION_METHODS
from edgemeta.augment import CHANNELS, channel_list
from edgemeta.benchmarks.provenance import Provenance
from edgemeta.evaluation import EvalError
from edgemeta.evaluation.adaptation_runs import evaluate, protocol_notes
from edgemeta.evaluation.arguments import comma_list, k_list, positive_int
from edgemeta.evaluation.datasets import SPLITS, load_dataset, under_channels, under_conditions
from edgemeta.evaluation.method_plans import MODEL_NAMES, plan_methods
from edgemeta.evaluation.models import load_model
from edgemeta.evaluation.report import markdown_table, write_outputs
from edgemeta.evaluation.saved_records import resummarize
from edgemeta.runtime.bundle import BUILTIN_BUNDLE

OPT_IN = [name for name, m in ADAPTATION_METHODS.items() if not m.evaluated_by_default]


def _model_and_path(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    if name not in MODEL_NAMES:
        raise argparse.ArgumentTypeError(f"model name must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return name, Path(path)


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
  # no new runs: an earlier run's records re-summarized on the test speakers, dropping espeak-ng voices whose variant
  # a training speaker of the built-in model used (reads OLD.jsonl and OLD.summary.json; models, methods, k, seeds: the old run's)
  edgemeta eval --from-records reports/kshot.jsonl --json reports/kshot-test.jsonl

writes OUT (JSON Lines), OUT with .md (the table), .png (CER against k) and .summary.json
(clip lists, rates, guard decisions, notes, timings, the run's provenance). speechocean762-train is scored on
the committed split's test speakers (--split dev: its dev speakers, for choices). "worse" compares every method
with one baseline: the pretrained model's k=0 (without --model pretrained=...: the first model's).
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
    parser.add_argument("--manifest", type=Path, action="append", help="JSONL manifest (repeatable; required unless --from-records)")
    parser.add_argument("--model", type=_model_and_path, action="append", default=[], metavar="NAME=PATH",
                        help=f"NAME one of {', '.join(MODEL_NAMES)}; PATH a checkpoint (.pt) or a bundle "
                             "(directory or archive); repeatable (default: the built-in bundle as meta-sgd)")
    parser.add_argument("--methods", type=comma_list, default=None,
                        help=f"comma-separated, from {', '.join(ADAPTATION_METHODS)} (default: every method the models "
                             f"allow, {', '.join(OPT_IN)} excepted); none is always reported")
    parser.add_argument("--k", type=k_list, default=[0, 1, 5, 10], help="adaptation clips, comma-separated (default: 0,1,5,10)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="draws of adaptation clips per speaker (default: 3)")
    parser.add_argument("--guard", action="store_true", help="bundles: clip checks and the guard, as the device enrolls")
    parser.add_argument("--greedy", action="store_true",
                        help="bundles: best-path decoding instead of their language model, as checkpoints decode (compares acoustic models)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="speechocean762-train speakers to score: test (reported figures, the default) or dev "
                             "(where choices are made); other manifests are scored whole")
    parser.add_argument("--conditions", type=positive_int, default=None, metavar="N",
                        help="score every speaker under N recording conditions of its own (noise, room, 8 kHz band limit, "
                             "level: one per copy of the speaker, for all its clips) instead of as recorded (default: as recorded)")
    parser.add_argument("--channels", type=channel_list, default=None, metavar="NAMES",
                        help=f"score every speaker through each named channel (comma-separated, from {', '.join(CHANNELS)}) "
                             "instead of as recorded; not with --conditions (default: as recorded)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch and onnxruntime CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON Lines output, one record per run")
    parser.add_argument("--from-records", type=Path, metavar="OLD.jsonl",
                        help="run nothing: re-summarize an earlier run's records (and OLD.summary.json) for --split, "
                             "dropping espeak-ng speakers whose variant a training speaker of --unseen-by used")
    parser.add_argument("--unseen-by", type=Path, default=BUILTIN_BUNDLE, metavar="MODEL",
                        help="with --from-records: the bundle or checkpoint whose training speakers' espeak-ng variants "
                             "are not unseen (default: the built-in bundle)")
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
    provenance = Provenance()
    if args.json.suffix in (".md", ".png"):
        raise EvalError(f"--json {args.json}: the table and plot are written beside OUT with .md and .png; give OUT another suffix")
    if args.from_records is not None:
        if args.manifest or args.model:
            raise EvalError("--from-records runs nothing: its manifests and models are the old run's; drop --manifest and --model")
        rows, guard = resummarize(args.from_records, args.json, args.split, args.unseen_by, provenance)
        print(markdown_table(rows, guard))
        print(f"wrote {args.json} and its .md, .png, .summary.json from {args.from_records}", file=sys.stderr)
        return 0
    if not args.manifest:
        raise EvalError("give --manifest (or --from-records OLD.jsonl)")
    if args.conditions and args.channels:
        raise EvalError("give --conditions or --channels, not both (each replaces the speakers as recorded)")
    torch.set_num_threads(args.threads)
    pairs = args.model or [("meta-sgd", BUILTIN_BUNDLE)]
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EvalError(f"--model {duplicated[0]} is given more than once")
    models = {name: load_model(name, path, args.threads, args.guard, args.greedy) for name, path in pairs}
    for name, model in models.items():
        expected = {name, ADAPTATION_METHODS[name].adapts_as} if name in ADAPTATION_METHODS else {name}
        if model.method is not None and model.method not in expected:
            print(f"note: --model {name}: {model.path} was trained as {model.method!r}", file=sys.stderr)
    if args.guard and any(m.kind == "checkpoint" for m in models.values()):
        print("note: --guard applies to bundles; checkpoints are adapted raw (the guard is the device's)", file=sys.stderr)
    plans = plan_methods(models, args.methods)
    folders = [m.resolve().parent.name for m in args.manifest]
    if len(set(folders)) < len(folders):
        raise EvalError(f"two manifests share the folder name {sorted(f for f in folders if folders.count(f) > 1)[0]!r}, "
                        "which names their dataset")
    datasets = [load_dataset(m, args.split) for m in args.manifest]
    if args.conditions:
        datasets = [under_conditions(d, args.conditions) for d in datasets]
    if args.channels:
        datasets = [under_channels(d, args.channels) for d in datasets]
    notes = [note for d in datasets for note in d.notes] + protocol_notes(datasets, models, args.k)
    for note in notes:
        print(note, file=sys.stderr)
    loaded = time.perf_counter()
    records, enrolled = evaluate(datasets, models, plans, args.k, args.seeds)

    facts = {
        "models": {n: {"path": str(m.path), "kind": m.kind, "trained_as": m.method} for n, m in models.items()},
        "methods": [asdict(p) for p in plans],
        "k": args.k, "seeds": args.seeds, "guard": args.guard, "split": args.split, "conditions": args.conditions or 0,
        "channels": args.channels or [],
        "datasets": {d.name: {
            "manifest": str(d.manifest),
            "speakers": {s.speaker: {
                "clips": len(s.scored) + len(s.pool),
                "scored": [s.names[u.source] for u in s.scored],
                "adaptation": {seed: [s.names[u.source] for u in s.support(seed, max(args.k))] for seed in range(args.seeds)},
            } for s in d.speakers},
        } for d in datasets},
        "seconds": {"loading": round(loaded - started, 2), "evaluation": round(time.perf_counter() - loaded, 2)},
    }
    rows = write_outputs(args.json, records, enrolled, facts, notes, provenance)
    print(markdown_table(rows, args.guard))
    print(f"wrote {args.json} and its .md, .png, .summary.json in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
