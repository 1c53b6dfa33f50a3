"""``python -m edgemeta.export CHECKPOINT OUT [--int8] [--no-parity] [--archive]``: same as ``edgemeta export``."""

from __future__ import annotations

import argparse
import sys

from edgemeta.export.command import EXAMPLES, configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgemeta.export",
        description="Export a checkpoint as a device bundle, checking parity by default.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
