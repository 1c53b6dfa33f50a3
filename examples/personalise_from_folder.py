#!/usr/bin/env python3
"""Personalise a recognizer from a folder of your own recordings, then transcribe with your head.

The folder holds audio files (wav, flac, ogg, mp3, any rate >= 8 kHz) each
with a same-stem ``.txt`` transcript::

    my-clips/
      clip01.wav  clip01.txt    "the quick brown fox jumps over the lazy dog"
      clip02.wav  clip02.txt    ...

(a JSONL manifest, one ``{"audio": ..., "text": ...}`` per line, works too).
Enrollment runs exactly as ``edgemeta-runtime enroll --from DIR``
(``edgemeta.runtime.enrollment.enroll_and_save``): unreadable, silent or clipped clips
and clips whose transcript does not match the audio are left out and named; a
guard measures on held-out clips whether adapting helps; if it does, the head
takes the bundle's few gradient steps with its learned rates. The result is
saved as the profile ``--user`` under ``$EDGEMETA_HOME`` (default
``${XDG_DATA_HOME:-~/.local/share}/edgemeta``), where ``edgemeta-runtime
transcribe/listen --user`` find it. The ``--test`` files are then transcribed
with the base head and with the user's head.

Only the device runtime is used (onnxruntime, numpy, torch CPU): no trainer code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from edgemeta.runtime.adapter import Enrollment
from edgemeta.runtime.audio import AudioError
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.cli import EXIT_INPUT, EXIT_OK, REPORTED_ERRORS, exit_code
from edgemeta.runtime.enrollment import clips_from_source, enroll_and_save
from edgemeta.runtime.profile_store import Profile, ProfileStore, check_user
from edgemeta.runtime.recognizer import Recognizer

EXAMPLES = """\
examples:
  # enroll alice on her clips with the built-in bundle, then transcribe two files with her head
  python examples/personalise_from_folder.py --user alice --enroll my-clips/ --test note1.wav note2.flac

  # another bundle, profiles kept in a folder of your choice
  EDGEMETA_HOME=/tmp/profiles python examples/personalise_from_folder.py \\
      --bundle bundles/mine --user alice --enroll alice.jsonl --test meeting.wav

  # afterwards, the same profile from the command line
  edgemeta-runtime transcribe --user alice meeting.wav
"""


def get_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=BUILTIN_BUNDLE, help="bundle directory or .tar.gz (default: the built-in one)")
    parser.add_argument("--user", required=True, help="profile name ([A-Za-z0-9_.-], up to 64 characters)")
    parser.add_argument("--enroll", required=True, metavar="DIR|MANIFEST", help="folder of audio + same-stem .txt, or a JSONL manifest")
    parser.add_argument("--test", nargs="*", default=[], metavar="FILE", help="audio files to transcribe after enrollment")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for onnxruntime and torch (default 1)")
    return parser.parse_args()


def create_profile(bundle: Bundle, store: ProfileStore, user: str, source: str, threads: int) -> tuple[Enrollment, Profile]:
    """Read the clips of ``source``, enroll ``user`` on them and save the profile (as ``edgemeta-runtime enroll --from``)."""
    clips, unreadable = clips_from_source(source, bundle.sample_rate)
    print(f"enrolling {user} on {len(clips)} readable clips from {source} (up to {bundle.inner_steps} steps, bundle {bundle.source})")
    return enroll_and_save(bundle, store, user, clips, unreadable, threads)


def print_report(result: Enrollment, profile: Profile, store: ProfileStore) -> None:
    """What enrollment did: clips left out and why, the guard's decision, the numbers and the time taken."""
    print(f"clips used: {len(result.clips_used)}")
    for name, reason in result.clips_left_out:
        print(f"left out {name}: {reason}")
    if result.guard is not None:
        guard = result.guard
        print(f"guard ({guard.rule}): {'accepted' if guard.accepted else 'refused'}: {guard.reason}")
    print(f"decision: {result.decision}")
    if result.before is not None and result.after is not None:
        print(f"on the enrollment clips: loss {result.before.loss:.3f} -> {result.after.loss:.3f}, "
              f"CER {result.before.cer:.3f} -> {result.after.cer:.3f}")
    print("time: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.seconds.items()))
    head = "adapted head" if profile.adapted else "base head"
    print(f"saved profile {profile.user} version {profile.version} ({head}) in {store.folder(profile.user)}")


def transcribe(bundle: Bundle, profile: Profile, files: list[str], threads: int) -> bool:
    """Print each file's transcript with the base head and with the user's head; ``False`` if a file was unreadable."""
    recognizer = Recognizer(bundle, threads=threads)
    base = recognizer.transcribe_files(files)
    recognizer.set_head(profile.weights)
    personal = recognizer.transcribe_files(files)
    readable = True
    for name, base_result, user_result in zip(files, base, personal):
        if isinstance(user_result, AudioError):
            print(f"error: {user_result}", file=sys.stderr)
            readable = False
            continue
        print(f"{name}")
        print(f"  base head: {base_result.text}")
        print(f"  {profile.user}: {user_result.text}")
    return readable


def main() -> int:
    """Enroll, save, transcribe; exit codes as ``edgemeta-runtime``'s (0 ok, 1 unusable input, 2 bad user name, 3 bad bundle)."""
    args = get_args()
    torch.set_num_threads(args.threads)
    try:
        user = check_user(args.user)
        bundle = load_bundle(args.bundle)
        store = ProfileStore()
        result, profile = create_profile(bundle, store, user, args.enroll, args.threads)
    except REPORTED_ERRORS as error:  # bad user name, bundle, manifest or folder
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    print_report(result, profile, store)
    if args.test and not transcribe(bundle, profile, args.test, args.threads):
        return EXIT_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
