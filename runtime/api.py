"""One-call helpers of the public API (:mod:`edgemeta.runtime`): transcribe one file with a bundle and a user's profile.

Torch-free: transcribing needs onnxruntime and numpy alone.
"""

from __future__ import annotations

from pathlib import Path

from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.profile_store import ProfileStore, check_user
from edgemeta.runtime.recognizer import Recognizer


def as_bundle(bundle: Bundle | str | Path | None) -> Bundle:
    """``bundle`` itself, or the bundle at that path (``None``: the built-in one), verified."""
    return bundle if isinstance(bundle, Bundle) else load_bundle(BUILTIN_BUNDLE if bundle is None else bundle)


def transcribe_file(path: str | Path, bundle: Bundle | str | Path | None = None, user: str | None = None,
                    home: str | Path | None = None, threads: int = 1) -> str:
    """The transcript of one audio file, as ``edgemeta-runtime [--bundle B] transcribe [--user U] FILE`` prints it.

    ``bundle``: a :class:`Bundle`, a bundle path, or ``None`` for the built-in one.
    ``user``: use that user's enrolled profile (``None``: the base head); profiles
    live under ``home`` (default ``$EDGEMETA_HOME``). Raises
    :class:`~edgemeta.runtime.audio.AudioError` for a file that cannot be read,
    :class:`~edgemeta.runtime.profile_store.ProfileError` for a user never enrolled
    (or enrolled on another bundle) and :class:`~edgemeta.runtime.bundle.BundleError`
    for a bad bundle; each message names what is wrong.
    """
    loaded = as_bundle(bundle)
    head = None if user is None else ProfileStore(home).load(check_user(user), loaded.digest).weights
    (result,) = Recognizer(loaded, head, threads=threads).transcribe_files([path])
    if isinstance(result, Exception):
        raise result
    return result.text
