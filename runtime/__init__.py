"""edgemeta's device runtime: speech recognition that adapts to its user, on the device.

The command line is ``edgemeta-runtime`` (``python -m edgemeta.runtime``); the
same things from Python::

    from edgemeta.runtime import enroll, transcribe_file

    print(transcribe_file("note.wav"))                   # the built-in bundle, base head
    result, profile = enroll("alice", "alice-clips/")    # clip01.wav + clip01.txt, ...
    print(result.decision)                               # what the guard kept, and why
    print(transcribe_file("note.wav", user="alice"))     # with alice's adapted head

For more control: :func:`load_bundle` (default :data:`BUILTIN_BUNDLE`), a
:class:`Recognizer` (``transcribe_files``, ``transcribe`` of waveforms,
``set_head``), :class:`Adapter` (``enroll`` on :class:`EnrollmentClip`\\ s,
without saving) and :class:`ProfileStore` (users' saved heads, under
``$EDGEMETA_HOME``). :func:`read_audio` reads any soundfile format as mono
float32 at a given rate.

Importing this package loads nothing: each name is imported on first use, and
only the adapting ones (:func:`enroll`, :class:`Adapter`,
:class:`EnrollmentClip`, :class:`Enrollment`) import torch; transcribing needs
onnxruntime and numpy alone.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (under edgemeta.runtime) that defines it
_EXPORTS = {
    "transcribe_file": "api",
    "BUILTIN_BUNDLE": "bundle",
    "Bundle": "bundle",
    "BundleError": "bundle",
    "load_bundle": "bundle",
    "Recognizer": "recognizer",
    "Transcript": "recognizer",
    "ProfileStore": "profile_store",
    "Profile": "profile_store",
    "ProfileError": "profile_store",
    "UserNameError": "profile_store",
    "read_audio": "audio",
    "AudioError": "audio",
    "ManifestError": "manifest",
    "enroll": "enrollment",  # torch
    "clips_from_source": "enrollment",  # torch
    "enroll_and_save": "enrollment",  # torch
    "Adapter": "adapter",  # torch
    "Enrollment": "adapter",  # torch
    "EnrollmentClip": "adapter",  # torch
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgemeta.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgemeta.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
