"""Enrollment as ``edgemeta-runtime enroll`` does it, for the CLI and for library users.

Read a manifest or folder (unreadable clips are named, not fatal), adapt with
:class:`~edgemeta.runtime.adapter.Adapter` (clip checks, guard, S steps) and
save the result as the user's new profile version, keeping the clips so a
later bundle can re-adapt without new recordings.
"""

from __future__ import annotations

from pathlib import Path

from edgemeta.runtime.adapter import Adapter, Enrollment, EnrollmentClip
from edgemeta.runtime.audio import AudioError, read_audio
from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.api import as_bundle
from edgemeta.runtime.manifest import scan_clips
from edgemeta.runtime.profile_store import Profile, ProfileStore, StoredClip, check_user

ENROLLMENT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells sea shells by the sea shore every summer.",
    "We will meet at seven thirty near the old train station.",
    "My favourite colours are green, purple and bright yellow.",
    "The weather today is cold and windy with a chance of rain.",
    "Open the window and let some fresh air into the room.",
    "A large bowl of hot soup is perfect on a winter evening.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Turn left at the next corner and then drive straight ahead.",
    "Six thick thistle sticks were lying on the path.",
    "Jack quietly moved up front and seized the big ball of wax.",
)


def clips_from_source(source: str, sample_rate: int) -> tuple[list[EnrollmentClip], list[tuple[str, str]]]:
    """Readable clips of a manifest or folder, resampled to ``sample_rate`` (the bundle's), and the unreadable ones with their reasons.

    Audio files of a folder without a same-stem ``.txt`` are among the unreadable ones.
    Raises :class:`ManifestError` when the manifest or folder itself cannot be used
    (not a manifest, no audio files, no transcripts, no clips).
    """
    clips = []
    listed, unreadable = scan_clips(source)
    for clip in listed:
        try:
            clips.append(EnrollmentClip(clip.audio.name, read_audio(clip.audio, sample_rate, max_seconds=60), clip.text))
        except AudioError as error:
            unreadable.append((clip.audio.name, str(error)))
    return clips, unreadable


def enroll_and_save(bundle: Bundle, store: ProfileStore, user: str, clips: list[EnrollmentClip], unreadable: list[tuple[str, str]], threads: int) -> tuple[Enrollment, Profile]:
    """Adapt on ``clips`` and save the result as ``user``'s new profile (previous version kept)."""
    result = Adapter(bundle, threads=threads).enroll(clips)
    result.clips_left_out = unreadable + result.clips_left_out
    profile = Profile(
        user=user,
        bundle_digest=bundle.digest,
        weights=result.weights,
        adapted=result.adapted,
        clips=[StoredClip(c.name, c.text, c.audio) for c in clips],
        report=result.to_dict(),
        bundle_source=str(bundle.source),
    )
    return result, store.save(profile)


def enroll(user: str, source: str | Path, bundle: Bundle | str | Path | None = None, home: str | Path | None = None,
           threads: int = 1) -> tuple[Enrollment, Profile]:
    """Enroll ``user`` from a folder (audio + same-stem ``.txt``) or JSONL manifest, as ``edgemeta-runtime enroll --from``.

    ``bundle``: a :class:`Bundle`, a bundle path, or ``None`` for the built-in one;
    profiles live under ``home`` (default ``$EDGEMETA_HOME``). Returns what enrollment
    did (clips used and left out with reasons, the guard's decision) and the saved
    profile. Raises :class:`ManifestError` for a source that cannot be used (nothing
    is saved then) and :class:`~edgemeta.runtime.profile_store.UserNameError` for a bad name.
    """
    check_user(user)
    loaded = as_bundle(bundle)
    clips, unreadable = clips_from_source(str(source), loaded.sample_rate)
    return enroll_and_save(loaded, ProfileStore(home), user, clips, unreadable, threads)
