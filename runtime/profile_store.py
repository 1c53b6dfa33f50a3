"""Per-user profiles: the adapted head, bound to one bundle, versioned, saved atomically.

Layout under ``$EDGEMETA_HOME`` (default ``${XDG_DATA_HOME:-~/.local/share}/edgemeta``)::

    profiles/<user>/v0007.safetensors   one file per version, never rewritten
    profiles/<user>/profile.json        {"current": 7, "previous": 6}: which versions are in use

A version file is safetensors (no pickle): the head's tensors (``head/<name>``),
the enrollment clips as 16 kHz int16 audio (``clip/<i>``, kept so that
``profiles migrate`` can re-adapt for a new bundle without recording again)
and JSON metadata: user, version, the digest of the bundle it belongs to,
clip names and transcripts, the enrollment's numbers and ``content_sha256``,
a sha256 over all of the rest. A profile whose content does not match that
hash (edited or corrupted) is refused, as is one made for another bundle.
The hash detects changes, it does not authenticate: anyone who can write the
file can also rewrite the hash.

Saving writes the new version to a temporary file, fsyncs it and renames it
into place, then replaces ``profile.json`` the same way (temporary file,
fsync, rename, fsync of the folder). Until that last rename, ``profile.json``
names the old versions, which are complete: a crash at any point leaves the
previous profile intact. ``rollback`` swaps current and previous in one such
replace. Versions that neither entry names are deleted after a save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from edgemeta.runtime.atomic_file import atomic_write
from edgemeta.runtime.audio import SAMPLE_RATE

PROFILE_FORMAT = 1
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
POINTER = "profile.json"
_METADATA_KEY = "edgemeta_profile"
_STALE_TMP_SECONDS = 600
# dtype names inside the content hash, as the first profiles (written through torch) spelled them
_HASHED_DTYPE = {np.dtype(np.float32): "torch.float32", np.dtype(np.int16): "torch.int16"}


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the user, the file and the problem."""


class UserNameError(ProfileError):
    """A user name outside ``[A-Za-z0-9_.-]{1,64}``."""


def edgemeta_home() -> Path:
    """Where the runtime keeps its data: ``$EDGEMETA_HOME`` or ``${XDG_DATA_HOME:-~/.local/share}/edgemeta``."""
    if os.environ.get("EDGEMETA_HOME"):
        return Path(os.environ["EDGEMETA_HOME"])
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "edgemeta"


def check_user(user: str) -> str:
    """Return ``user`` if it is a valid name (``[A-Za-z0-9_.-]{1,64}``, not ``.`` or ``..``), else raise."""
    if not USER_NAME.fullmatch(user) or user in (".", ".."):
        raise UserNameError(f"bad user name {user!r}: use 1 to 64 of A-Z a-z 0-9 _ . - (not '.' or '..')")
    return user


@dataclass
class StoredClip:
    """An enrollment clip kept with the profile: 16 kHz mono float32 audio and its transcript."""

    name: str
    text: str
    audio: np.ndarray


@dataclass
class Profile:
    """One version of a user's profile. ``weights`` is the head to use (the base head when not adapted).

    Weights are read back as float32 numpy arrays (torch tensors are accepted
    when saving), so transcribing with a profile needs no torch.
    """

    user: str
    bundle_digest: str
    weights: Mapping[str, Any]
    adapted: bool
    clips: list[StoredClip] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    version: int = 0
    created: str = ""
    bundle_source: str = ""

    def summary(self) -> dict:
        """Metadata and numbers as plain data (no tensors, no audio)."""
        return {
            "user": self.user,
            "version": self.version,
            "created": self.created,
            "adapted": self.adapted,
            "bundle_digest": self.bundle_digest,
            "bundle_source": self.bundle_source,
            "clips": [{"name": c.name, "text": c.text, "seconds": round(len(c.audio) / SAMPLE_RATE, 2)} for c in self.clips],
            "report": self.report,
        }


def _content_hash(metadata: dict, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{_HASHED_DTYPE[array.dtype]}|{tuple(array.shape)}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def encode_profile(profile: Profile) -> bytes:
    """The bytes of a profile file (safetensors with hashed metadata)."""
    tensors = {f"head/{name}": np.ascontiguousarray(w, dtype=np.float32) for name, w in profile.weights.items()}
    for index, clip in enumerate(profile.clips):
        tensors[f"clip/{index:04d}"] = np.round(np.clip(clip.audio, -1.0, 1.0) * 32767).astype(np.int16)
    metadata = profile.summary()
    metadata.update(format=PROFILE_FORMAT, head=list(profile.weights))
    metadata["content_sha256"] = _content_hash(metadata, tensors)
    return save_safetensors(tensors, metadata={_METADATA_KEY: json.dumps(metadata)})


def decode_profile(data: bytes, source: Path) -> Profile:
    """Parse and verify a profile file's bytes; raises :class:`ProfileError` naming ``source``."""
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_size])
        metadata = json.loads(header["__metadata__"][_METADATA_KEY])
        tensors = load_safetensors(data)
    except Exception as error:  # truncated or foreign files fail in many ways
        raise ProfileError(f"{source}: not a readable profile ({type(error).__name__}: {error})") from None
    if metadata.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{source}: profile format {metadata.get('format')!r}, this runtime reads {PROFILE_FORMAT}")
    expected = metadata.pop("content_sha256", None)
    if expected != _content_hash(metadata, tensors):
        raise ProfileError(f"{source}: profile was modified or corrupted (content sha256 does not match); refusing it")
    weights = {name: tensors[f"head/{name}"] for name in metadata["head"]}
    clips = [
        StoredClip(c["name"], c["text"], tensors[f"clip/{i:04d}"].astype(np.float32) / 32767)
        for i, c in enumerate(metadata["clips"])
    ]
    return Profile(
        metadata["user"], metadata["bundle_digest"], weights, metadata["adapted"], clips, metadata["report"],
        metadata["version"], metadata["created"], metadata.get("bundle_source", ""),
    )


class ProfileStore:
    """The profiles of all users under ``home`` (default :func:`edgemeta_home`)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else edgemeta_home()
        self.root = self.home / "profiles"

    def folder(self, user: str) -> Path:
        """The folder holding ``user``'s profile versions."""
        return self.root / check_user(user)

    @staticmethod
    def version_file(version: int) -> str:
        """File name of a version."""
        return f"v{version:04d}.safetensors"

    def users(self) -> list[str]:
        """Users with a profile, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / POINTER).is_file() and USER_NAME.fullmatch(p.name))

    def pointer(self, user: str) -> dict[str, int | None]:
        """``{"current": version, "previous": version or None}`` of ``user``."""
        path = self.folder(user) / POINTER
        try:
            pointer = json.loads(path.read_text(encoding="utf-8"))
            return {"current": int(pointer["current"]), "previous": None if pointer["previous"] is None else int(pointer["previous"])}
        except FileNotFoundError:
            raise ProfileError(f"{user}: no profile ({path} does not exist); "
                               f"enroll first: edgemeta-runtime enroll --user {user} --from CLIPS/") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ProfileError(f"{path}: not a readable profile index ({error})") from None

    def _read(self, user: str, version: int) -> Profile:
        path = self.folder(user) / self.version_file(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ProfileError(f"{user}: profile version {version} is missing ({path})") from None
        profile = decode_profile(data, path)
        if profile.user != user or profile.version != version:
            raise ProfileError(f"{path}: holds version {profile.version} of user {profile.user!r}, not version {version} of {user!r}")
        return profile

    def load(self, user: str, bundle_digest: str | None = None) -> Profile:
        """``user``'s current profile, verified; with ``bundle_digest``, refused unless made for that bundle."""
        profile = self._read(user, self.pointer(user)["current"])
        if bundle_digest is not None and profile.bundle_digest != bundle_digest:
            raise ProfileError(
                f"{user}: profile version {profile.version} was made for another bundle "
                f"({profile.bundle_source or 'unknown'}, digest {profile.bundle_digest[:12]}), this bundle's digest is "
                f"{bundle_digest[:12]}: run 'edgemeta-runtime profiles migrate {user}' with this bundle to re-adapt"
            )
        return profile

    def previous(self, user: str) -> Profile:
        """``user``'s previous profile version, verified."""
        previous = self.pointer(user)["previous"]
        if previous is None:
            raise ProfileError(f"{user}: no previous profile version to go back to")
        return self._read(user, previous)

    def save(self, profile: Profile) -> Profile:
        """Store ``profile`` as ``user``'s current one, keeping the one it replaces; returns it with version and date set."""
        folder = self.folder(profile.user)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_tmp(folder)
        try:
            current: int | None = self.pointer(profile.user)["current"]
        except ProfileError:
            current = None
        existing = [int(p.name[1:5]) for p in folder.glob("v[0-9][0-9][0-9][0-9].safetensors")]
        profile.version = max([0, *existing, current or 0]) + 1
        profile.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write(folder / self.version_file(profile.version), encode_profile(profile))
        self._point(profile.user, profile.version, current)
        return profile

    def _point(self, user: str, current: int, previous: int | None) -> None:
        folder = self.folder(user)
        atomic_write(folder / POINTER, json.dumps({"current": current, "previous": previous}).encode("utf-8"))
        keep = {self.version_file(v) for v in (current, previous) if v is not None}
        for path in folder.glob("v*.safetensors"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def rollback(self, user: str) -> Profile:
        """Make the previous version current (and the current one previous, so a second rollback undoes it)."""
        pointer = self.pointer(user)
        previous = self.previous(user)  # verified before it may become current; the current one may be damaged
        self._point(user, previous.version, pointer["current"])
        return previous

    def delete(self, user: str) -> None:
        """Remove every version of ``user``'s profile and its enrollment clips."""
        folder = self.folder(user)
        if not folder.is_dir():
            raise ProfileError(f"{user}: no profile ({folder} does not exist)")
        shutil.rmtree(folder)

    @staticmethod
    def _remove_stale_tmp(folder: Path) -> None:
        """Delete temporary files a killed save left behind (old enough not to be another save in progress)."""
        for tmp in folder.glob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
            except FileNotFoundError:
                pass
