"""``python -m edgemeta.bench peers ...``: the same commands as ``edgemeta bench``."""

from __future__ import annotations

import argparse
import sys

from edgemeta.bench.peers import add_commands


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen benchmark."""
    parser = argparse.ArgumentParser(prog="python -m edgemeta.bench", description="Benchmarks against peer recognizers.")
    add_commands(parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK"))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
