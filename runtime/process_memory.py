"""A process's peak resident memory, read from ``/proc`` (light: benchmarks import it into torch-free processes)."""

from __future__ import annotations

import re
from pathlib import Path

_PEAK = re.compile(r"^VmHWM:\s+(\d+) kB", re.MULTILINE)


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """Peak resident memory (``VmHWM``) of a live process, or ``None`` where ``/proc`` does not give it.

    A child's ``ru_maxrss`` would also count the pages of the parent it was
    forked from, so benchmarks read each process's own figure instead.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = _PEAK.search(status)
    return int(match.group(1)) * 1024 if match else None
