"""``edgemeta``: the trainer's command line (also ``python -m edgemeta``).

Each subcommand lives in the module that does the work; that module exposes
``add_parser(subparsers)``, which registers the subcommand and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "edgemeta.synth",
    "edgemeta.train",
    "edgemeta.meta_train",
    "edgemeta.evaluation.command",
    "edgemeta.export.command",
    "edgemeta.bundle_checkpoint",
    "edgemeta.word_frequencies",
    "edgemeta.benchmarks.peers",
    "edgemeta.recipe",
    "edgemeta.demo",
)

EPILOG = """\
typical session:
  edgemeta synth --out data/synth --speakers 40 --clips 20
  edgemeta train --manifest data/synth/manifest.jsonl --speechocean --out runs/pretrain
  edgemeta meta-train --init runs/pretrain/last.pt --method meta-sgd --out runs/meta-sgd
  edgemeta lm --out runs/lm.npz
  edgemeta export runs/meta-sgd/last.pt bundles/mine --lm runs/lm.npz
  edgemeta eval --manifest data/flite/manifest.jsonl --model meta-sgd=bundles/mine --json eval.jsonl
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemeta",
        description="Train, meta-train, evaluate and export speech recognizers that adapt on the device.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgemeta`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
