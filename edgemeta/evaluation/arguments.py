"""Command-line value types shared by ``edgemeta eval`` and ``edgemeta bench peers`` (light: the peers' workers import them)."""

from __future__ import annotations

import argparse


def comma_list(value: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; an empty list is an error."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return names


def k_list(value: str) -> list[int]:
    """``"0,1,5,10"`` -> the distinct adaptation clip counts, sorted; each >= 0."""
    try:
        ks = sorted({int(v) for v in comma_list(value)})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if ks[0] < 0:
        raise argparse.ArgumentTypeError("k must be >= 0")
    return ks


def positive_int(value: str) -> int:
    """A whole number >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number
