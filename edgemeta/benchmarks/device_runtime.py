"""Runtime benchmarks: adaptation latency, transcription and enrollment speed and memory, live latency through a virtual microphone.

    python -m edgemeta.benchmarks.device_runtime --bundle BUNDLE [--clips MANIFEST|DIR] [--live] [--json OUT]

Without ``--clips`` it speaks the enrollment sentences with espeak-ng. All
timings use one thread (``--threads``). ``--live`` starts a private
PulseAudio server with a null sink (the DESIGN.md recipe), runs
``edgemeta-runtime listen`` on its monitor and plays each clip into it with
``paplay``: latency is the time from the end of the clip's speech to its final
transcript on ``listen``'s stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.runtime.adapter import Adapter, EnrollmentClip
from edgemeta.runtime.audio import read_audio, write_audio
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.enrollment import ENROLLMENT_SENTENCES
from edgemeta.runtime.manifest import read_clips
from edgemeta.runtime.process_memory import peak_rss_bytes
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import encode, normalize_text
from edgemeta.benchmarks.virtual_microphone import ListenProcess, play, virtual_microphone

MB = 1024 * 1024


def speak(texts: tuple[str, ...] | list[str], folder: Path, sample_rate: int, voice: str = "en-us") -> list[EnrollmentClip]:
    """Clips of ``texts`` spoken by espeak-ng (``voice``) at ``sample_rate``, also written to ``folder`` as WAV."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt install espeak-ng)")
    clips = []
    for index, text in enumerate(texts):
        path = folder / f"say-{index:02d}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        clips.append(EnrollmentClip(path.name, read_audio(path, sample_rate), text))
    return clips


def audio_seconds(audio: list[np.ndarray], sample_rate: int) -> float:
    """Total duration of ``audio`` at ``sample_rate``."""
    return sum(len(a) for a in audio) / sample_rate


def adaptation_latency(bundle: Bundle, clips: list[EnrollmentClip], threads: int, repeats: int) -> dict:
    """Best-of-``repeats`` seconds: the S update steps on all clips, and a whole guarded enrollment with its features and guard as it times them."""
    torch.set_num_threads(threads)
    adapter = Adapter(bundle, threads=threads)
    x, n = adapter.batch([o.features for o in adapter.recognizer.infer([c.audio for c in clips])])  # the update's input, untimed
    targets = [encode(normalize_text(c.text)) for c in clips]
    times: dict[str, list[float]] = {"features": [], "update": [], "enrollment": [], "guard": []}
    for repeat in range(repeats + 1):  # the first round warms up
        started = time.perf_counter()
        adapter.trainer.adapt(x, n, targets, adapter.steps, final_loss=False)  # as enrollment's final adaptation
        update_done = time.perf_counter()
        result = adapter.enroll(clips)
        if repeat:
            times["features"].append(result.seconds["features"])
            times["update"].append(update_done - started)
            times["enrollment"].append(result.seconds["total"])
            times["guard"].append(result.seconds.get("guard", float("nan")))
    return {
        "k": len(clips),
        "steps": adapter.steps,
        "threads": threads,
        "audio_seconds": audio_seconds([c.audio for c in clips], bundle.sample_rate),
        "seconds": {key: min(values) for key, values in times.items()},
        "adapted": result.adapted,
        "decision": result.decision,
        "loss": [result.before.loss, result.after.loss] if result.before else None,
        "cer": [result.before.cer, result.after.cer] if result.before else None,
    }


# edgemeta-runtime's main, then the process's own peak memory on stderr (this parent has torch loaded)
_MEASURED_RUNTIME = ("import sys; from edgemeta.runtime.cli import main; from edgemeta.runtime.process_memory import peak_rss_bytes; "
                     "code = main(sys.argv[1:]); print(f'peak_rss_bytes={peak_rss_bytes()}', file=sys.stderr); sys.exit(code)")


def runtime_process(bundle_path: str, threads: int, arguments: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``edgemeta-runtime`` process running ``arguments`` (a command and its options)."""
    command = [sys.executable, "-c", _MEASURED_RUNTIME, "--bundle", bundle_path, "--threads", str(threads), *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, int(re.search(r"peak_rss_bytes=(\d+)", done.stderr).group(1)) / MB


def transcription_speed(bundle_path: str, files: list[Path], seconds: float, threads: int) -> dict:
    """Wall time and peak resident memory of an ``edgemeta-runtime transcribe`` process on ``files`` (``seconds`` of audio)."""
    runtime_process(bundle_path, threads, ["transcribe", "--jsonl", str(files[0])])  # warm the disk cache
    process_seconds, peak = runtime_process(bundle_path, threads, ["transcribe", "--jsonl", *map(str, files)])
    return {"audio_seconds": seconds, "process_seconds": process_seconds, "peak_rss_mb": peak}


def enrollment_process(bundle_path: str, files: list[Path], clips: list[EnrollmentClip], threads: int, folder: Path) -> dict:
    """Wall time and peak resident memory of an ``edgemeta-runtime enroll --from`` process on the clips (torch loaded)."""
    manifest = folder / "enroll.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(f), "text": c.text, "speaker": "bench"}) + "\n" for f, c in zip(files, clips)))
    env = {**os.environ, "EDGEMETA_HOME": str(folder / "home")}
    process_seconds, peak = runtime_process(bundle_path, threads, ["enroll", "--user", "bench", "--from", str(manifest)], env)
    return {"clips": len(files), "process_seconds": process_seconds, "peak_rss_mb": peak}


def inference_rtf(bundle: Bundle, clips: list[EnrollmentClip], threads: int, repeats: int) -> float:
    """Best-of-``repeats`` real-time factor of transcribing the clips in one process (model loaded)."""
    recognizer = Recognizer(bundle, threads=threads)
    audio = [c.audio for c in clips]
    recognizer.transcribe(audio)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        recognizer.transcribe(audio)
        times.append(time.perf_counter() - started)
    return min(times) / audio_seconds(audio, bundle.sample_rate)


def live_latency(bundle_path: str, files: list[Path], audio: list[np.ndarray], threads: int, folder: Path) -> dict:
    """Latency from the end of each clip's speech to its (last) final transcript, through a virtual microphone."""
    with virtual_microphone(folder / "vmic") as env:
        listen = ListenProcess(bundle_path, env, threads)
        try:
            latencies, texts = [], []
            for path, samples in zip(files, audio):
                speech_over = play(path, env, samples)
                finals = listen.finals()
                latencies.append(finals[-1][0] - speech_over if finals else float("nan"))
                texts.append(" ".join(text for _, text in finals))
            peak = peak_rss_bytes(listen.process.pid) / MB
        finally:
            listen.stop()
    return {"latency_seconds": latencies, "median": float(np.nanmedian(latencies)), "texts": texts, "listen_peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print (and optionally write) one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m edgemeta.benchmarks.device_runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(BUILTIN_BUNDLE))
    parser.add_argument("--clips", help="enrollment clips (manifest or folder); default: 10 espeak-ng sentences")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--live", action="store_true", help="also measure live latency through a virtual PulseAudio microphone")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory(prefix="edgemeta-bench-") as tmp:
        folder = Path(tmp)
        if args.clips:
            listed = read_clips(args.clips)[: args.k]
            clips = [EnrollmentClip(c.audio.name, read_audio(c.audio, bundle.sample_rate), c.text) for c in listed]
        else:
            clips = speak(list(ENROLLMENT_SENTENCES[: args.k]), folder, bundle.sample_rate)
        files = []
        for index, clip in enumerate(clips):
            files.append(folder / f"clip-{index:02d}.wav")
            write_audio(files[-1], clip.audio, bundle.sample_rate)
        audio = [c.audio for c in clips]
        results = {
            "bundle": str(bundle.source),
            "digest": bundle.digest,
            "adaptation": adaptation_latency(bundle, clips, args.threads, args.repeats),
            "transcribe_rtf_in_process": inference_rtf(bundle, clips, args.threads, args.repeats),
            "transcribe_process": transcription_speed(args.bundle, files, audio_seconds(audio, bundle.sample_rate), args.threads),
            "enroll_process": enrollment_process(args.bundle, files, clips, args.threads, folder),
        }
        if args.live:
            results["live"] = live_latency(args.bundle, files, audio, args.threads, folder)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        write_json(Path(args.json), results, provenance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
