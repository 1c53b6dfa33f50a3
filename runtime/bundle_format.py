"""The bundle format's names, in one place: version, file names, graph inputs and outputs, head prefix.

``docs/bundle-format.md`` describes the format; this module owns every name in
it that code spells. The writer (``edgemeta.export``), the reader
(:mod:`edgemeta.runtime.bundle`) and the runtime's callers import these
instead of repeating the strings.

Compatibility: a format change raises :data:`FORMAT_VERSION` and adds to
:data:`UPGRADES` a step that turns a manifest of the previous version into
the new one, so bundles already shipped (the built-in one among them, which
a test loads and verifies) keep loading. A change an older reader can
read too (such as dropping a key no reader uses) needs no new version.
"""

from __future__ import annotations

from typing import Any, Callable

# Files
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
STREAM_FILE = "stream.onnx"
INT8_FILE = "model.int8.onnx"
WEIGHTS_FILE = "weights.bin"  # external data of model.onnx and stream.onnx
HEAD_FILE = "head.pt"
HEAD_WEIGHTS_FILE = "head.safetensors"
RATES_FILE = "rates.safetensors"
INIT_WEIGHTS_FILE = "init.safetensors"  # optional: the head enrollment starts from, when it is not the base head

# manifest["adaptation"]["update"]: how a step turns a gradient into a move (edgemeta.runtime.update_rule)
SGD = "sgd"
NORMALIZED = "normalized"
UPDATE_RULES = (SGD, NORMALIZED)
LM_FILE = "lm.npz"
REQUIRED_FILES = (MODEL_FILE, HEAD_FILE, HEAD_WEIGHTS_FILE, RATES_FILE)

# model.onnx: inputs and outputs, in order
WAVEFORM = "waveform"
LENGTHS = "lengths"
LOG_PROBS = "log_probs"
FEATURES = "features"
FRAME_LENGTHS = "frame_lengths"
MODEL_INPUTS = (WAVEFORM, LENGTHS)
MODEL_OUTPUTS = (LOG_PROBS, FEATURES, FRAME_LENGTHS)

# stream.onnx: CHUNK then the state inputs; STREAM_OUTPUTS then the new state, in the same order
CHUNK = "chunk"
STREAM_OUTPUTS = (LOG_PROBS, FEATURES)
STATE_PREFIX = "state."
NEW_STATE_PREFIX = "new_"

# The head's parameters are named as in PyTorch under this prefix (head.scale, head.output.weight, ...)
HEAD_PREFIX = "head."


def state_name(part: str) -> str:
    """Input name of one part of the streaming state (``audio`` -> ``state.audio``)."""
    return STATE_PREFIX + part


def new_state_name(state: str) -> str:
    """Output name that carries the next value of the state input ``state`` (``state.gru`` -> ``new_state.gru``)."""
    return NEW_STATE_PREFIX + state


FORMAT_VERSION = 2


def _upgrade_1(manifest: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added how enrollment steps (``adaptation``: ``update``, ``step_scales``, ``init``); version 1 stepped plain SGD from the base head."""
    adaptation = {"update": SGD, "step_scales": None, "init": None, **manifest["adaptation"]}
    return {**manifest, "format_version": 2, "adaptation": adaptation}


# version -> function turning a manifest of that version into one of the next version
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1}
