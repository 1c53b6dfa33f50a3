"""Where a saved figure came from: the stamp every benchmark and report writes into its JSON under ``reports/``.

The stamp holds the exact command line, UTC start and end, the machine (CPU
model, cores, platform), the load average at start and end (the project's
machine is shared, so a slow figure can be read against its load), the git
commit (and whether tracked files differed from it) and the versions of the
packages the figures depend on. Light: no torch import, so torch-free
benchmark processes can stamp too. Usage::

    provenance = Provenance()          # first thing in main()
    ...                                # the measurement
    write_json(Path("reports/x.json"), results, provenance)
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "onnxruntime", "numpy", "pocketsphinx", "edgemeta")  # pocketsphinx: bench peers


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical cores (all, and those this process may use), memory and platform."""
    try:
        memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")))
    except (OSError, StopIteration):
        memory_kb = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": None if memory_kb is None else round(memory_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_state() -> dict[str, Any]:
    """The checked-out commit and whether tracked files differ from it (``None`` values outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "tracked_files_modified": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages the figures depend on (``None``: not installed)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class Provenance:
    """A run's provenance: the start is taken when it is created, the end by :meth:`stamp`."""

    def __init__(self) -> None:
        self.command = shlex.join(getattr(sys, "orig_argv", sys.argv))
        self.cwd = os.getcwd()
        self.started_utc = _utc_now()
        self.load_average_start = _load_average()

    def stamp(self) -> dict[str, Any]:
        """The stamp: command, working directory, start and end (UTC), load averages (1, 5, 15 min), machine, git, packages."""
        return {
            "command": self.command,
            "cwd": self.cwd,
            "started_utc": self.started_utc,
            "finished_utc": _utc_now(),
            "load_average_start": self.load_average_start,
            "load_average_end": _load_average(),
            "machine": machine(),
            "git": git_state(),
            "packages": package_versions(),
        }


def write_json(path: Path, data: dict[str, Any], provenance: Provenance) -> None:
    """Write ``data`` to ``path`` as indented JSON with ``"provenance"`` first; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": provenance.stamp(), **data}, indent=1) + "\n", encoding="utf-8")


def summary_path(jsonl: Path) -> Path:
    """Where a JSON Lines output's stamp and other facts go: beside it, with ``.summary.json``."""
    return jsonl.with_suffix(".summary.json")
