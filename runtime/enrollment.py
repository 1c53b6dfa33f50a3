"""Enrollment as ``edgemeta-runtime enroll`` does it, for the CLI and for library users.

Read a manifest or folder (unreadable clips are named, not fatal), adapt with
:class:`~edgemeta.runtime.adapter.Adapter` (clip checks, guard, S steps) and
save the result as the user's new profile version, keeping the clips so a
later bundle can re-adapt without new recordings.
"""

from __future__ import annotations

from edgemeta.runtime.adapter import Adapter, Enrollment, EnrollmentClip
from edgemeta.runtime.audio import AudioError, read_audio
from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.manifest import read_clips
from edgemeta.runtime.profile_store import Profile, ProfileStore, StoredClip

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

    Raises :class:`ManifestError` when the manifest or folder itself cannot be used.
    """
    clips, unreadable = [], []
    for clip in read_clips(source):
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
