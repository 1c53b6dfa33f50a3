"""``edgemeta-runtime``: enroll, transcribe and listen on the device (also ``python -m edgemeta.runtime``).

Exit codes: 0 done; 1 an input could not be used (an audio file, a manifest
or folder, a profile); 2 usage (including a bad user name); 3 a bad bundle;
4 no usable microphone. ``enroll`` exits 0 whenever its inputs are readable,
also when every clip was left out or the guard kept the base head.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from edgemeta.runtime.audio import AudioError
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, BundleError, load_bundle
from edgemeta.runtime.bundle_format import FEATURES, HEAD_FILE, LENGTHS, LOG_PROBS, MODEL_FILE, WAVEFORM
from edgemeta.runtime.language_model import LanguageModelError, read_text_counts
from edgemeta.runtime.manifest import ManifestError
from edgemeta.runtime.microphone import MicrophoneError
from edgemeta.runtime.profile_store import ProfileError, ProfileStore, UserNameError, check_user
from edgemeta.runtime.recognizer import Recognizer

if TYPE_CHECKING:
    from edgemeta.runtime.adapter import Enrollment, EnrollmentClip

# torch (the head's gradient steps, clip checks) is imported only by the commands that adapt:
# transcribing needs onnxruntime and numpy alone, so a device that only transcribes stays small.

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_BUNDLE, EXIT_MICROPHONE = 0, 1, 2, 3, 4

EPILOG = """\
examples:
  edgemeta-runtime info
  edgemeta-runtime devices
  edgemeta-runtime enroll --user alice                       # read sentences aloud into the microphone
  edgemeta-runtime enroll --user alice --from clips/         # audio files + same-stem .txt transcripts
  edgemeta-runtime enroll --user alice --from alice.jsonl    # JSONL manifest: {"audio", "text"} per line
  edgemeta-runtime transcribe --user alice meeting.wav note.flac
  edgemeta-runtime transcribe --jsonl *.wav > transcripts.jsonl
  edgemeta-runtime transcribe --words digits.txt pin.wav     # only the words in digits.txt
  edgemeta-runtime listen --user alice                       # live; Ctrl-C to stop
  edgemeta-runtime profiles list
  edgemeta-runtime profiles rollback alice
  edgemeta-runtime --bundle new-bundle/ profiles migrate     # re-adapt every user for a new bundle
  edgemeta-runtime --bundle my-bundle.tar.gz verify

Profiles live under $EDGEMETA_HOME (default ${XDG_DATA_HOME:-~/.local/share}/edgemeta).
Without --user a command uses the bundle's base head.
exit codes: 0 ok, 1 an input could not be used, 2 usage or bad user name, 3 bad bundle, 4 no microphone.
"""


class CommandError(Exception):
    """A failure to report as ``error: message`` with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


REPORTED_ERRORS = (CommandError, UserNameError, ProfileError, BundleError, MicrophoneError, ManifestError, LanguageModelError)


def exit_code(error: Exception) -> int:
    """The exit code of an error a command reports (one of :data:`REPORTED_ERRORS`)."""
    if isinstance(error, CommandError):
        return error.code
    if isinstance(error, UserNameError):  # before ProfileError, its base class
        return EXIT_USAGE
    if isinstance(error, BundleError):
        return EXIT_BUNDLE
    if isinstance(error, MicrophoneError):
        return EXIT_MICROPHONE
    return EXIT_INPUT


def say(message: str) -> None:
    """A human-readable progress or status line (stderr, so stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)


def open_bundle(args: argparse.Namespace) -> Bundle:
    """The bundle named by ``--bundle`` (or ``info``/``verify``'s BUNDLE; default: the built-in one), verified."""
    return load_bundle(getattr(args, "bundle_path", None) or args.bundle)


def set_torch_threads(threads: int) -> None:
    """torch's CPU threads, for the commands that run the head's gradient steps."""
    import torch

    torch.set_num_threads(max(threads, 1))


def user_head(store: ProfileStore, bundle: Bundle, user: str | None) -> Mapping[str, Any] | None:
    """The head for ``--user`` (``None``: the base head); refuses a damaged profile or one for another bundle."""
    if user is None:
        return None
    return store.load(check_user(user), bundle.digest).weights


# Enrollment -----------------------------------------------------------------------


def clips_from_microphone(count: int, device: str | None, sample_rate: int) -> tuple[list[EnrollmentClip], int]:
    """Show ``count`` sentences and record each from the microphone at ``sample_rate``; returns the clips and the overflow count."""
    from edgemeta.runtime.adapter import EnrollmentClip
    from edgemeta.runtime.enrollment import ENROLLMENT_SENTENCES
    from edgemeta.runtime.live import record_utterance
    from edgemeta.runtime.microphone import Microphone

    clips = []
    with Microphone(device, sample_rate=sample_rate) as microphone:
        say(f"recording from {microphone.device['name']} at {microphone.device_rate} Hz; read each sentence, then pause")
        for index, sentence in enumerate(ENROLLMENT_SENTENCES[:count], 1):
            print(f"[{index}/{count}] Read aloud: {sentence}", flush=True)
            audio = record_utterance(microphone.chunks(), sample_rate)
            if audio is None:
                say(f"[{index}/{count}] no speech heard, skipping this sentence")
            else:
                say(f"[{index}/{count}] recorded {len(audio) / sample_rate:.1f} s")
                clips.append(EnrollmentClip(f"mic-{index:02d}", audio, sentence))
    return clips, microphone.overflows


def report_enrollment(user: str, result: Enrollment, as_json: bool) -> None:
    """Print what enrollment did and why."""
    if as_json:
        print(json.dumps({"user": user, **result.to_dict()}), flush=True)
        return
    for name, reason in result.clips_left_out:
        say(f"left out {name}: {reason}")
    if result.guard is not None:
        g = result.guard
        say(f"guard ({g.rule}): {'accepted' if g.accepted else 'refused'}: {g.reason}")
    say(result.decision)
    if result.before is not None and result.after is not None:
        say(
            f"on the {len(result.clips_used)} enrollment clips: loss {result.before.loss:.3f} -> {result.after.loss:.3f}, "
            f"CER {result.before.cer:.3f} -> {result.after.cer:.3f}"
        )
    say("time: " + ", ".join(f"{key} {value:.3f} s" for key, value in result.seconds.items()))


def command_enroll(args: argparse.Namespace) -> int:
    from edgemeta.runtime.enrollment import clips_from_source, enroll_and_save

    set_torch_threads(args.threads)
    user = check_user(args.user)
    bundle = open_bundle(args)
    store = ProfileStore()
    overflows = 0
    if args.source is not None:
        clips, unreadable = clips_from_source(args.source, bundle.sample_rate)
    else:
        clips, overflows = clips_from_microphone(args.clips, args.device, bundle.sample_rate)
        unreadable = []
    say(f"enrolling {user}: {len(clips)} readable clips, up to {bundle.inner_steps} steps, bundle {bundle.source}")
    result, profile = enroll_and_save(bundle, store, user, clips, unreadable, args.threads)
    report_enrollment(user, result, args.json)
    if overflows:
        say(f"warning: {overflows} microphone input overflows (audio was lost); re-enroll if the clips sound choppy")
    say(f"saved profile {user} version {profile.version} ({'adapted head' if profile.adapted else 'base head'})")
    return EXIT_OK


# Transcription --------------------------------------------------------------------


def word_list(args: argparse.Namespace) -> Mapping[str, float] | None:
    """The ``--words`` file's word counts (``None`` without one); an unusable file names itself."""
    return None if args.words is None else read_text_counts([args.words])


def command_transcribe(args: argparse.Namespace) -> int:
    bundle = open_bundle(args)
    head = user_head(ProfileStore(), bundle, args.user)
    recognizer = Recognizer(bundle, head, threads=args.threads, greedy=args.greedy, words=word_list(args))
    code = EXIT_OK
    group = 16  # files read and batched together
    with tqdm(total=len(args.files), desc="transcribing", unit="file", disable=None, file=sys.stderr) as progress:
        for first in range(0, len(args.files), group):
            names = args.files[first : first + group]
            for name, result in zip(names, recognizer.transcribe_files(names)):
                if isinstance(result, AudioError):
                    code = EXIT_INPUT
                    if args.jsonl:
                        print(json.dumps({"audio": name, "error": str(result)}), flush=True)
                    else:
                        say(f"error: {result}")
                elif args.jsonl:
                    line = {"audio": name, "text": result.text}
                    if args.timestamps:
                        line["segments"] = result.to_dict()["segments"]
                    print(json.dumps(line), flush=True)
                elif args.timestamps:
                    for s in result.segments:
                        print(f"{name} [{s.start:7.2f} - {s.end:7.2f}] {s.text}", flush=True)
                else:
                    print(result.text if len(args.files) == 1 else f"{name}: {result.text}", flush=True)
            progress.update(len(names))
    return code


def command_listen(args: argparse.Namespace) -> int:
    from edgemeta.runtime.live import LiveTranscriber
    from edgemeta.runtime.microphone import Microphone

    bundle = open_bundle(args)
    head = user_head(ProfileStore(), bundle, args.user)
    live = LiveTranscriber(bundle, head, threads=args.threads, greedy=args.greedy, words=word_list(args))

    def show(event) -> None:
        if args.jsonl:
            print(json.dumps(event.to_dict()), flush=True)
        elif event.kind == "final":
            print(event.text, flush=True)
        elif sys.stderr.isatty():
            print(f"\r\033[K... {event.text}", end="", file=sys.stderr, flush=True)

    microphone = Microphone(args.device, sample_rate=bundle.sample_rate)
    mode = "streaming graph" if live.streaming else "whole-utterance model"
    # Ctrl-C (SIGINT) is how listening ends, even when a script started it as a background job (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with microphone:
            say(f"listening on {microphone.device['name']} ({microphone.device_rate} Hz -> {bundle.sample_rate} Hz, {mode}); Ctrl-C to stop")
            for chunk in microphone.chunks():
                for event in live.feed(chunk):
                    show(event)
    except KeyboardInterrupt:
        for event in live.finish():
            show(event)
    say(f"stopped; {microphone.overflows} input overflows")
    return EXIT_OK


def command_devices(args: argparse.Namespace) -> int:
    from edgemeta.runtime.microphone import input_devices

    devices = input_devices()
    if not devices:
        raise CommandError("no input device found", EXIT_MICROPHONE)
    for d in devices:
        print(f"{'*' if d['default'] else ' '} {d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate']} Hz)")
    return EXIT_OK


# Bundle ---------------------------------------------------------------------------


def command_info(args: argparse.Namespace) -> int:
    bundle = open_bundle(args)
    if args.json:
        print(json.dumps({"source": str(bundle.source), "digest": bundle.digest, "manifest": bundle.manifest}, indent=2))
        return EXIT_OK
    m, p = bundle.manifest, bundle.provenance
    head_size = sum(int(np.prod(param.shape)) for param in bundle.head_parameters)
    lines = [
        f"bundle        {bundle.source}",
        f"digest        {bundle.digest}",
        f"format        {m['format_version']}, {bundle.sample_rate} Hz, {len(bundle.vocabulary)} symbols",
        f"model         {json.dumps(bundle.model_config)}",
        f"body          {_describe_body(bundle)}",
        f"head          {', '.join(bundle.head_names)} ({head_size} values, features {bundle.feature_size})",
        f"adaptation    {_describe_adaptation(bundle)}",
        f"streaming     {'yes, ' + str(bundle.streaming['chunk_samples']) + ' samples per chunk' if bundle.streaming else 'no'}",
        f"int8          {'yes' if bundle.has_int8 else 'no'}",
        f"decoder       {_describe_decoder(bundle.decoder_settings)}",
        f"recipe        {p.get('recipe')}",
        f"created       {p.get('created')}, {_minutes(p.get('training_seconds'))} of training, torch {p.get('torch_version')}",
        f"training      {len(bundle.training_speakers)} speakers; data {json.dumps(p.get('data'))}",
        "files         " + ", ".join(f"{name} ({(bundle.path / name).stat().st_size} B)" for name in m["files"]),
    ]
    print("\n".join(lines))
    return EXIT_OK


def _describe_adaptation(bundle: Bundle) -> str:
    a = bundle.adaptation
    rates = "learned per parameter" if a["rates"] == "per-parameter" else f"one scalar rate {a['scalar_rate']:g}"
    return (f"{a['method']}: up to {bundle.inner_steps} {a['update']} steps, rates {rates}"
            + (", per step" if a.get("step_scales") else "")
            + ("; enrollment starts from its own head (init.safetensors)" if bundle.has_init_head else "; enrollment starts from the base head"))


def _minutes(seconds: float | None) -> str:
    return "unknown time" if seconds is None else f"{seconds / 60:.1f} min"


def _describe_body(bundle: Bundle) -> str:
    body, limit = bundle.body, bundle.max_segment_seconds
    if body is None:
        return "not recorded"
    weights = f"{body['source']}" + (f", sha256 {body['sha256'][:12]}, licence {body['license']}" if body.get("sha256") else "")
    return f"{body['name']}: {weights}; " + (f"at most {limit:g} s per run" if limit else "any length per run")


def _describe_decoder(settings: dict | None) -> str:
    if settings is None:
        return "best path (no language model)"
    return (f"beam search, beam {settings['beam']}, language model {settings['file']} (weight {settings['lm_weight']}, "
            f"character bonus {settings['char_bonus']}; {settings.get('source')})")


def command_verify(args: argparse.Namespace) -> int:
    import torch

    from edgemeta.runtime.adapter import HeadTrainer

    bundle = open_bundle(args)
    bundle.decoder()  # the language model, if any, must load
    noise = np.random.default_rng(0).normal(0, 0.1, (1, bundle.sample_rate)).astype(np.float32)
    log_probs, features = bundle.session(threads=args.threads).run(
        [LOG_PROBS, FEATURES], {WAVEFORM: noise, LENGTHS: np.array([noise.shape[1]])}
    )
    set_torch_threads(args.threads)
    trainer = HeadTrainer(bundle)  # loads head.pt, head.safetensors and rates.safetensors
    trainer.load(trainer.base)  # head.pt run with head.safetensors must give model.onnx's output
    with torch.no_grad():
        head_log_probs = trainer.log_probs(torch.from_numpy(features)).numpy()
    if bundle.streaming:
        bundle.stream_session(threads=args.threads)
    gap = float(np.abs(head_log_probs - log_probs).max())
    if not np.isfinite(log_probs).all() or gap > 1e-3:
        raise CommandError(f"{bundle.source}: {MODEL_FILE} and {HEAD_FILE} disagree (max |Δ log-prob| {gap:.2e})", EXIT_BUNDLE)
    print(f"ok: {bundle.source} (digest {bundle.digest[:12]}): every file matches its sha256, the models load and agree")
    return EXIT_OK


# Profiles -------------------------------------------------------------------------


def command_profiles(args: argparse.Namespace) -> int:
    store = ProfileStore()
    users = [check_user(u) for u in args.users]
    if args.action == "list":
        users = store.users()
        if not users:
            say(f"no profiles under {store.root}")
        for user in users:
            try:
                p = store.load(user)
                print(f"{user}\tversion {p.version}\t{'adapted' if p.adapted else 'base head'}\t{p.created}\tbundle {p.bundle_digest[:12]}")
            except ProfileError as error:
                print(f"{user}\tunusable: {error}")
        return EXIT_OK
    if args.action == "show":
        for user in users:
            print(json.dumps(store.load(user).summary(), indent=2))
    elif args.action == "rollback":
        for user in users:
            p = store.rollback(user)
            say(f"{user}: version {p.version} is current again")
    elif args.action == "delete":
        for user in users:
            store.delete(user)
            say(f"{user}: profile and enrollment clips deleted")
    elif args.action == "migrate":
        return migrate(args, store, users or store.users())
    return EXIT_OK


def migrate(args: argparse.Namespace, store: ProfileStore, users: list[str]) -> int:
    """Re-adapt each user's kept enrollment clips on this bundle."""
    from edgemeta.runtime.adapter import EnrollmentClip
    from edgemeta.runtime.enrollment import enroll_and_save

    set_torch_threads(args.threads)
    bundle = open_bundle(args)
    for user in users:
        old = store.load(user)
        if old.bundle_digest == bundle.digest:
            say(f"{user}: already made for this bundle")
            continue
        clips = [EnrollmentClip(c.name, c.audio, c.text) for c in old.clips]
        result, profile = enroll_and_save(bundle, store, user, clips, [], args.threads)
        say(f"{user}: {result.decision}; version {profile.version} (rollback restores the old bundle's profile)")
    return EXIT_OK


# Parser ---------------------------------------------------------------------------


def add_decoding_options(sub: argparse.ArgumentParser, greedy_help: str) -> None:
    """``--greedy`` or ``--words FILE``: how transcripts are decoded."""
    decoding = sub.add_mutually_exclusive_group()
    decoding.add_argument("--greedy", action="store_true", help=greedy_help)
    decoding.add_argument("--words", metavar="FILE", help="transcribe only sequences of the words in FILE (UTF-8 text: a word "
                          "list or example sentences; digits are spelled out), e.g. digits or commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemeta-runtime",
        description="Speech recognition that adapts to its user, on the device.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", default=str(BUILTIN_BUNDLE), metavar="PATH", help="bundle directory or .tar/.tar.gz (default: the built-in one)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads for onnxruntime and torch (default 1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub

    add("devices", command_devices, "list microphones (input devices)", "edgemeta-runtime devices")
    sub = add("info", command_info, "describe the bundle", "edgemeta-runtime --bundle my-bundle/ info")
    sub.add_argument("bundle_path", nargs="?", metavar="BUNDLE", help="the bundle to describe (same as --bundle)")
    sub.add_argument("--json", action="store_true", help="print the manifest as JSON")
    sub = add("verify", command_verify, "check the bundle's hashes and that its models load and agree", "edgemeta-runtime --bundle my-bundle.tar.gz verify")
    sub.add_argument("bundle_path", nargs="?", metavar="BUNDLE", help="the bundle to check (same as --bundle)")

    sub = add("enroll", command_enroll, "adapt to a user from the microphone or from recorded clips", "edgemeta-runtime enroll --user alice --from clips/")
    sub.description = (
        "Adapt to a user from the microphone or from recorded clips (about 10 sentences; a folder holds\n"
        "audio files with same-stem .txt transcripts). Silent, clipped or mismatched clips are named and\n"
        "left out. A guard adapts the head K-fold on the user's own clips for several step counts (up to\n"
        "the bundle's S) and keeps the count whose held-out CER is lowest, or the base head when none\n"
        "lowers the held-out loss without raising the CER; it says which and why. The result is saved as\n"
        "the user's profile (the previous version is kept).")
    sub.add_argument("--user", required=True, help="user name ([A-Za-z0-9_.-], up to 64)")
    sub.add_argument("--from", dest="source", metavar="MANIFEST|DIR", help="JSONL manifest or folder of audio + same-stem .txt (default: record from the microphone)")
    sub.add_argument("--clips", type=int, default=10, metavar="N", help="sentences to record from the microphone (default 10)")
    sub.add_argument("--device", help="microphone name or index (default: the system's default input)")
    sub.add_argument("--json", action="store_true", help="print the enrollment's numbers as one JSON object")

    sub = add("transcribe", command_transcribe, "transcribe audio files", "edgemeta-runtime transcribe --user alice --jsonl a.wav b.flac")
    sub.add_argument("--user", help="use this user's adapted head (default: the base head)")
    sub.add_argument("--jsonl", action="store_true", help='one JSON line per file: {"audio", "text"} or {"audio", "error"}')
    sub.add_argument("--timestamps", action="store_true", help="also give the voice-activity segments with start and end times")
    add_decoding_options(sub, "best-path decoding, without the bundle's language model (faster, less accurate)")
    sub.add_argument("files", nargs="+", metavar="FILE")

    sub = add("listen", command_listen, "transcribe the microphone live (Ctrl-C to stop)", "edgemeta-runtime listen --user alice")
    sub.add_argument("--user", help="use this user's adapted head (default: the base head)")
    sub.add_argument("--device", help="microphone name or index (default: the system's default input)")
    sub.add_argument("--jsonl", action="store_true", help='print every partial and final transcript as {"type", "text", "start", "end"}')
    add_decoding_options(sub, "final transcripts best-path too, without the bundle's language model")

    sub = add("profiles", command_profiles, "list, show, roll back, delete or migrate user profiles", "edgemeta-runtime profiles show alice")
    sub.add_argument("action", choices=("list", "show", "rollback", "delete", "migrate"))
    sub.add_argument("users", nargs="*", metavar="USER", help="users to act on (migrate: default every user)")
    return parser


def misplaced_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """A hint when an option of ``edgemeta-runtime`` itself (``--bundle``, ``--threads``: before COMMAND) follows COMMAND, else ``None``."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    global_options = {option for a in parser._actions if a.nargs != 0 for option in a.option_strings}  # those taking a value
    index = 0
    while index < len(argv) and argv[index] not in commands:
        index += 1 + (argv[index] in global_options)  # skip a global option's value
    if index >= len(argv):
        return None
    command = argv[index]
    for position, token in enumerate(argv[index + 1 :], index + 1):
        if token == "--":
            return None
        option, _, value = token.partition("=")
        if option in global_options:
            value = value or (argv[position + 1] if position + 1 < len(argv) else option.strip("-").upper())
            return f"{option} goes before the command: edgemeta-runtime {option} {value} {command} ..."
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgemeta-runtime``."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    hint = misplaced_option(parser, argv)
    if hint is not None:
        parser.error(hint)
    args = parser.parse_args(argv)
    if args.command == "profiles" and args.action in ("show", "rollback", "delete") and not args.users:
        parser.error(f"profiles {args.action} needs at least one USER")
    try:
        return args.func(args)
    except REPORTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
