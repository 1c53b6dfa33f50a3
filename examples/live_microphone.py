#!/usr/bin/env python3
"""Live transcription from a microphone: partial transcripts while you speak, a final one when you pause.

Audio is recorded at the device's own rate (PortAudio via ``sounddevice``),
resampled to the bundle's rate, cut into utterances by voice activity and, where the
bundle has one, run through its streaming graph (``stream.onnx``) chunk by
chunk as it arrives, so a final transcript only waits for the last chunk
(``edgemeta.runtime.live.LiveTranscriber``). With ``--user`` the profile saved
by enrollment (``edgemeta-runtime enroll`` or
``examples/personalise_from_folder.py``) supplies the adapted head.

Transcripts go to stdout: on a terminal the partial transcript is rewritten in
place and each final one stays on its own line; otherwise every event is one
line, ``partial: ...`` or ``final: ...``. Status goes to stderr. Stop with
Ctrl-C, or give ``--seconds``.

Only the device runtime is used (onnxruntime, numpy, torch CPU, sounddevice).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.cli import EXIT_OK, REPORTED_ERRORS, exit_code
from edgemeta.runtime.live import LiveEvent, LiveTranscriber
from edgemeta.runtime.microphone import Microphone, input_devices
from edgemeta.runtime.profile_store import ProfileStore, check_user

EXAMPLES = """\
examples:
  # the default microphone, the built-in bundle's base head; Ctrl-C to stop
  python examples/live_microphone.py

  # alice's adapted head (enroll her first), a microphone chosen by (part of) its name, stop after 30 s
  python examples/live_microphone.py --user alice --device "USB Audio" --seconds 30

  # list the microphones, then pick one by its index
  python examples/live_microphone.py --list-devices
  python examples/live_microphone.py --bundle bundles/mine --device 2
"""


def get_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=BUILTIN_BUNDLE, help="bundle directory or .tar.gz (default: the built-in one)")
    parser.add_argument("--user", help="use this user's adapted head from $EDGEMETA_HOME (default: the base head)")
    parser.add_argument("--device", help="microphone index or (part of its) name (default: the system's default input)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds of audio (default: run until Ctrl-C)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for onnxruntime (default 1)")
    parser.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    return parser.parse_args()


def create_transcriber(bundle: Bundle, user: str | None, threads: int) -> LiveTranscriber:
    """A live transcriber on the bundle with ``user``'s head (``None``: the base head)."""
    head = None if user is None else ProfileStore().load(check_user(user), bundle.digest).weights
    return LiveTranscriber(bundle, head, threads=threads)


def show(event: LiveEvent, terminal: bool) -> None:
    """Print one partial or final transcript."""
    if not terminal:
        print(f"{event.kind}: {event.text}", flush=True)
    elif event.kind == "partial":
        print(f"\r\033[K... {event.text}", end="", flush=True)
    else:
        print(f"\r\033[K[{event.start:7.2f} - {event.end:7.2f}] {event.text}", flush=True)


def listen(microphone: Microphone, live: LiveTranscriber, seconds: float | None) -> float:
    """Feed the microphone to ``live`` until ``seconds`` of audio (or Ctrl-C); return the seconds heard."""
    rate = microphone.sample_rate
    terminal = sys.stdout.isatty()
    heard = 0
    try:
        for chunk in microphone.chunks():
            for event in live.feed(chunk):
                show(event, terminal)
            heard += len(chunk)
            if seconds is not None and heard >= seconds * rate:
                break
    except KeyboardInterrupt:
        pass
    for event in live.finish():
        show(event, terminal)
    return heard / rate


def main() -> int:
    """Listen and print; exit codes as ``edgemeta-runtime``'s (4: no usable microphone)."""
    args = get_args()
    torch.set_num_threads(args.threads)
    try:
        if args.list_devices:
            for device in input_devices():
                print(f"{'*' if device['default'] else ' '} {device['index']:3d}  {device['name']}  ({device['rate']} Hz)")
            return EXIT_OK
        bundle = load_bundle(args.bundle)
        live = create_transcriber(bundle, args.user, args.threads)
        mode = "streaming graph" if live.streaming else "whole-utterance model (the bundle has no streaming graph)"
        with Microphone(args.device, sample_rate=bundle.sample_rate) as microphone:
            print(f"listening on {microphone.device['name']} ({microphone.device_rate} Hz -> {bundle.sample_rate} Hz, {mode}); "
                  f"{'Ctrl-C' if args.seconds is None else f'{args.seconds:g} s or Ctrl-C'} to stop", file=sys.stderr, flush=True)
            heard = listen(microphone, live, args.seconds)
    except REPORTED_ERRORS as error:  # bad user name or profile, bundle, microphone
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    print(f"stopped after {heard:.1f} s of audio; {microphone.overflows} input overflows", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
