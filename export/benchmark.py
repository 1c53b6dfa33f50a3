"""Export benchmark: export wall time, fp32 vs int8 size (and CER), onnxruntime vs PyTorch eager speed on 1 thread.

Speed is the best of ``--repeats`` passes over the clips, one clip per call
(batch 1); the streaming graph is fed its suggested chunk size.

    python -m edgemeta.export.benchmark CHECKPOINT [--manifest M] [--clips 20] [--repeats 3] [--json out.json]

Without ``--manifest`` the clips are the parity module's synthetic signals
(speed and size only: CER needs transcripts).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime
import torch

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.export import parity
from edgemeta.export.bundle_writer import torch_threads, write_bundle
from edgemeta.runtime.audio import read_audio
from edgemeta.runtime.bundle import Bundle, load_bundle
from edgemeta.runtime.bundle_format import INT8_FILE, LENGTHS, LOG_PROBS, MODEL_FILE, WAVEFORM, WEIGHTS_FILE
from edgemeta.runtime.ctc_decode import greedy_decode
from edgemeta.runtime.manifest import read_clips
from edgemeta.runtime.metrics import score
from edgemeta.runtime.streaming import GraphStream
from edgemeta.runtime.text import normalize_text

SYNTHETIC_SECONDS = (3.0,) * 10


def _time_per_pass(run: Callable[[np.ndarray], np.ndarray], clips: Sequence[np.ndarray], repeats: int) -> tuple[float, list[np.ndarray]]:
    """Best wall time of ``repeats`` passes over ``clips`` (one clip per call, after a warm-up); last outputs."""
    outputs = [run(clip) for clip in clips[:1]]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = [run(clip) for clip in clips]
        best = min(best, time.perf_counter() - started)
    return best, outputs


def _onnx_runner(session: onnxruntime.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
    def run(clip: np.ndarray) -> np.ndarray:
        return session.run([LOG_PROBS], {WAVEFORM: clip[None], LENGTHS: np.array([len(clip)])})[0][0]
    return run


def _torch_runner(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(clip: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))[0].numpy()
    return run


def _stream_runner(bundle: Bundle) -> Callable[[np.ndarray], np.ndarray]:
    """``stream.onnx`` fed chunk by chunk and flushed with the silent tail, as the device streams."""
    stream = GraphStream(bundle, threads=1)
    return lambda clip: stream.run(clip)[0]


def benchmark(checkpoint: Path, manifest: Path | None, clips_count: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Export ``checkpoint`` into ``folder`` and measure it; return the numbers."""
    started = time.perf_counter()
    result = write_bundle(checkpoint, folder / "bundle", int8=True, archive=True, progress=lambda _: None)
    export_seconds = time.perf_counter() - started
    bundle = load_bundle(result.path)
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    fp32_bytes = (result.path / MODEL_FILE).stat().st_size + (result.path / WEIGHTS_FILE).stat().st_size
    int8_bytes = (result.path / INT8_FILE).stat().st_size
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "parameters": sum(p.numel() for p in model.parameters()),
        "export_seconds": round(export_seconds, 2),
        "export_stage_seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "model_onnx_bytes": fp32_bytes,  # model.onnx + weights.bin
        "model_int8_onnx_bytes": int8_bytes,
        "int8_size_ratio": round(int8_bytes / fp32_bytes, 3),
        "bundle_bytes": sum(p.stat().st_size for p in result.path.iterdir()),
        "archive_bytes": result.archive.stat().st_size,
    }

    if manifest:
        entries = read_clips(manifest)[:clips_count]
        clips = [read_audio(entry.audio, bundle.sample_rate) for entry in entries]
        references = [normalize_text(entry.text) for entry in entries]
    else:
        clips, references = parity.synthetic_clips(bundle.sample_rate, SYNTHETIC_SECONDS), []
    audio_seconds = sum(len(c) for c in clips) / bundle.sample_rate

    with torch_threads(1):
        runners = {
            "torch_eager": _torch_runner(model),
            "onnxruntime_fp32": _onnx_runner(bundle.session(threads=1)),
            "onnxruntime_int8": _onnx_runner(bundle.session(threads=1, int8=True)),
        }
        if bundle.streaming is not None:
            runners["onnxruntime_stream_fp32"] = _stream_runner(bundle)
        timings, transcripts = {}, {}
        for name, run in runners.items():
            seconds, outputs = _time_per_pass(run, clips, repeats)
            timings[name] = seconds
            transcripts[name] = [greedy_decode(out) for out in outputs]

    report.update(
        clips=len(clips),
        audio_seconds=round(audio_seconds, 2),
        threads=1,
        seconds={name: round(s, 4) for name, s in timings.items()},
        real_time_factor={name: round(s / audio_seconds, 5) for name, s in timings.items()},
        onnxruntime_speedup_over_torch=round(timings["torch_eager"] / timings["onnxruntime_fp32"], 2),
        int8_transcripts_equal_fp32=sum(a == b for a, b in zip(transcripts["onnxruntime_fp32"], transcripts["onnxruntime_int8"])),
    )
    if references:
        report["cer"] = {name: round(score(references, hyps).cer, 4) for name, hyps in transcripts.items()}
        report["int8_cer_delta_points"] = round(100 * (report["cer"]["onnxruntime_int8"] - report["cer"]["onnxruntime_fp32"]), 2)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The numbers as a Markdown table."""
    rows = [
        ("parameters", f"{report['parameters']:,}"),
        ("export wall time (int8, archive, parity)", f"{report['export_seconds']} s"),
        (f"{MODEL_FILE} + {WEIGHTS_FILE} / {INT8_FILE}", f"{report['model_onnx_bytes'] / 1e6:.2f} MB / {report['model_int8_onnx_bytes'] / 1e6:.2f} MB "
                                          f"({report['int8_size_ratio']}x)"),
        ("bundle / archive", f"{report['bundle_bytes'] / 1e6:.2f} MB / {report['archive_bytes'] / 1e6:.2f} MB"),
    ]
    for name, seconds in report["seconds"].items():
        rows.append((f"{name}, 1 thread, {report['clips']} clips ({report['audio_seconds']} s)",
                     f"{seconds:.3f} s, RTF {report['real_time_factor'][name]:.4f}"))
    rows.append(("onnxruntime speed-up over PyTorch eager", f"{report['onnxruntime_speedup_over_torch']}x"))
    rows.append(("int8 transcripts equal to fp32", f"{report['int8_transcripts_equal_fp32']} / {report['clips']}"))
    if "cer" in report:
        rows.append(("CER", ", ".join(f"{name} {cer:.4f}" for name, cer in report["cer"].items())))
        rows.append(("int8 CER delta", f"{report['int8_cer_delta_points']:+.2f} points"))
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgemeta.export.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--manifest", type=Path, help="clips with transcripts (adds CER of fp32 vs int8)")
    parser.add_argument("--clips", type=int, default=20, help="clips taken from the manifest")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    with tempfile.TemporaryDirectory() as folder:
        report = benchmark(args.checkpoint, args.manifest, args.clips, args.repeats, Path(folder))
    print(markdown(report))
    if args.json:
        write_json(args.json, report, provenance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
