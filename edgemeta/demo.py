"""The main job: personalise the built-in recognizer for voices it never heard, end to end.

``edgemeta demo`` synthesizes two voices no model was trained on (flite's
``rms`` and ``awb``), transcribes some of their clips with the base model,
enrolls each voice on k other clips through the same code path as
``edgemeta-runtime enroll`` (checks, guard, S gradient steps on the head with
the learned rates), transcribes the same clips again with the adapted head,
and prints CER before and after with the time each step took. Where PulseAudio
is installed it finishes with live transcription through a virtual microphone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.runtime.adapter import EnrollmentClip
from edgemeta.runtime.audio import read_audio
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.enrollment import enroll_and_save
from edgemeta.runtime.manifest import Clip, read_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.profile_store import ProfileStore
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import normalize_text


@dataclass
class VoiceResult:
    """What the demo measured for one voice."""

    voice: str
    cer_before: float
    cer_after: float
    wer_before: float
    wer_after: float
    adapted: bool
    decision: str
    enroll_seconds: float
    transcribe_seconds: float
    audio_seconds: float


def _clips_by_speaker(manifest: Path) -> dict[str, list[Clip]]:
    by_speaker: dict[str, list[Clip]] = {}
    for clip in read_manifest(manifest):
        by_speaker.setdefault(clip.speaker, []).append(clip)
    return by_speaker


def personalise_voice(bundle: Bundle, store: ProfileStore, voice: str, clips: list[Clip], k: int, threads: int) -> VoiceResult:
    """Enroll ``voice`` on its first ``k`` clips and score the rest before and after."""
    enrollment, scored = clips[:k], clips[k:]
    audio = [read_audio(c.audio, bundle.sample_rate) for c in scored]
    references = [normalize_text(c.text) for c in scored]
    recognizer = Recognizer(bundle, threads=threads)
    started = time.perf_counter()
    before = score(references, [t.text for t in recognizer.transcribe(audio)])
    transcribe_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result, profile = enroll_and_save(
        bundle, store, voice, [EnrollmentClip(c.audio.name, read_audio(c.audio, bundle.sample_rate), c.text) for c in enrollment], [], threads)
    enroll_seconds = time.perf_counter() - started
    recognizer.set_head(profile.weights)
    after = score(references, [t.text for t in recognizer.transcribe(audio)])
    return VoiceResult(voice, before.cer, after.cer, before.wer, after.wer, result.adapted, result.decision,
                       enroll_seconds, transcribe_seconds, sum(len(a) for a in audio) / bundle.sample_rate)


def live_transcription(bundle_path: Path, home: Path, user: str, clip: Clip, threads: int, folder: Path) -> str:
    """Play ``clip`` into a virtual microphone while ``edgemeta-runtime listen --user`` runs; its final text."""
    from edgemeta.benchmarks.virtual_microphone import ListenProcess, VirtualMicrophoneError, play, virtual_microphone

    try:
        with virtual_microphone(folder) as env:
            listen = ListenProcess(bundle_path, dict(env, EDGEMETA_HOME=str(home)), threads, user=user)
            try:
                play(clip.audio, env, read_audio(clip.audio))
                finals = listen.finals()
            finally:
                listen.stop()
    except VirtualMicrophoneError as error:
        return f"(skipped: {error})"
    return " ".join(text for _, text in finals)


def run_demo(bundle_path: Path, k: int, scored: int, seed: int, threads: int, live: bool) -> list[VoiceResult]:
    """The whole main job; prints as it goes and returns the per-voice results."""
    from edgemeta.synth import synthesize_corpus

    print(f"bundle: {bundle_path}")
    bundle = load_bundle(bundle_path)
    with tempfile.TemporaryDirectory(prefix="edgemeta-demo-") as work:
        work_dir = Path(work)
        started = time.perf_counter()
        manifest = synthesize_corpus(work_dir / "voices", speakers=2, clips=k + scored, seed=seed, engines=("flite",),
                                     conditions=False, workers=2)
        print(f"synthesized {2 * (k + scored)} clips of flite rms and awb (never used in training) "
              f"in {time.perf_counter() - started:.1f} s")
        store = ProfileStore(work_dir / "home")
        voices = _clips_by_speaker(manifest)
        results = []
        for voice, clips in sorted(voices.items()):
            result = personalise_voice(bundle, store, voice, clips, k, threads)
            print(f"{voice}: {result.decision}")
            results.append(result)
        print()
        print(f"| voice | k | CER before | CER after | WER before | WER after | adapted | enroll (s) | transcribe {scored} clips (s, RTF) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r.voice} | {k} | {r.cer_before:.3f} | {r.cer_after:.3f} | {r.wer_before:.3f} | {r.wer_after:.3f} | "
                  f"{'yes' if r.adapted else 'no'} | {r.enroll_seconds:.2f} | "
                  f"{r.transcribe_seconds:.2f} ({r.transcribe_seconds / r.audio_seconds:.3f}) |")
        if live:
            voice, clips = sorted(voices.items())[0]
            print(f"\nlive: playing one of {voice}'s scored clips into a virtual microphone; `edgemeta-runtime listen --user {voice}` hears:")
            heard = live_transcription(bundle_path, work_dir / "home", voice, clips[-1], threads, work_dir / "vmic")
            print(f"  reference: {normalize_text(clips[-1].text)}\n  heard:     {heard}")
    return results


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job: enroll voices the model never heard and compare CER before/after",
        description=__doc__,
        epilog="examples:\n  edgemeta demo\n  edgemeta demo --bundle bundles/mine --k 5 --no-live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", type=Path, default=BUILTIN_BUNDLE, help="bundle to personalise (default: the built-in one)")
    parser.add_argument("--k", type=int, default=10, help="enrollment clips per voice (default 10)")
    parser.add_argument("--scored", type=int, default=10, help="other clips per voice, transcribed before and after (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthesized prompts")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("EDGEMETA_THREADS", 1)), help="CPU threads (default 1)")
    parser.add_argument("--no-live", dest="live", action="store_false", help="skip the live virtual-microphone step")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the per-voice figures here, with the run's provenance")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    provenance = Provenance()
    results = run_demo(args.bundle, args.k, args.scored, args.seed, args.threads, args.live)
    if args.json is not None:
        write_json(args.json, {"bundle": str(args.bundle), "k": args.k, "scored": args.scored, "seed": args.seed,
                               "threads": args.threads, "voices": [asdict(r) for r in results]}, provenance)
    return 0
