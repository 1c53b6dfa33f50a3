"""Whisper body on real clips: speed, ONNX parity and size, fp16-stored weights, the log-mel floor's reference.

Clips are encoded one by one, as a device does, each alone (no 30 s padding). Measured:

- eager PyTorch fp32 real-time factor (front end + encoder) on ``--torch-threads``;
- the legacy ONNX export (opset 17, dynamic batch and time): onnxruntime real-time factor on
  ``--onnx-threads``, max abs difference from PyTorch, file size; the same graph with the
  initializers float16 holds exactly stored fp16 and cast back to fp32 at load, as the exporter
  stores them (size, max abs difference);
- the PyTorch weights stored fp16 and upcast: elements changed and output difference;
- the floor's reference: each clip's max log10 mel power, the fraction of features on the floor,
  and how much features and encoder frames (relative L2 change per frame) move when the clip's
  own max is replaced by a fixed level (what a stream could use).

Example::

    python -m edgemeta.benchmarks.whisper_body --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
        --clips 40 --json whisper-body.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.bodies.whisper_body import WhisperBody
from edgemeta.bodies.whisper_encoder import WhisperEncoder
from edgemeta.bodies.whisper_frontend import WhisperFrontendConfig
from edgemeta.bodies.whisper_weights import load_packaged_tiny_en
from edgemeta.export.onnx_export import store_exact_fp16
from edgemeta.runtime.audio import SAMPLE_RATE, read_audio
from edgemeta.runtime.manifest import read_manifest


def _encode(body: WhisperBody, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        frames, _ = body(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    return frames[0].numpy()


def export_onnx(body: WhisperBody, path: Path) -> None:
    """Legacy-exporter ONNX of the body: ``waveform [batch, samples]``, ``lengths [batch]`` -> frames, frame lengths."""
    example = torch.zeros(2, SAMPLE_RATE), torch.tensor([SAMPLE_RATE, SAMPLE_RATE // 2])
    torch.onnx.export(body, example, str(path), input_names=["waveform", "lengths"],
                      output_names=["frames", "frame_lengths"], opset_version=17, dynamo=False,
                      dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                                    "frames": {0: "batch", 1: "time"}, "frame_lengths": {0: "batch"}})


def store_weights_fp16(source: Path, target: Path) -> int:
    """Copy an ONNX model with its float16-exact initializers stored fp16, as the exporter stores them; return bytes saved."""
    import onnx

    model = onnx.load(str(source))
    saved = store_exact_fp16(model)
    onnx.save(model, str(target))
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="JSONL manifest of the clips")
    parser.add_argument("--clips", type=int, default=40, help="clips, spread evenly over the manifest")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--onnx-threads", type=int, default=1)
    parser.add_argument("--fixed-level", type=float, default=WhisperFrontendConfig().fixed_level,
                        help="fixed log10 reference compared with each clip's own max")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    torch.set_num_threads(args.torch_threads)
    clips = read_manifest(args.manifest)
    clips = clips[:: max(1, len(clips) // args.clips)][: args.clips]
    audio = [read_audio(clip.audio) for clip in clips]
    seconds = sum(len(a) for a in audio) / SAMPLE_RATE
    encoder = load_packaged_tiny_en()
    body = WhisperBody(encoder).eval()
    _encode(body, audio[0])  # first call allocates; not part of the steady state
    start = time.perf_counter()
    eager = [_encode(body, a) for a in audio]
    eager_rtf = (time.perf_counter() - start) / seconds

    with tempfile.TemporaryDirectory() as folder:
        fp32_path, fp16_path = Path(folder) / "body.onnx", Path(folder) / "body-fp16.onnx"
        export_onnx(body, fp32_path)
        store_weights_fp16(fp32_path, fp16_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = args.onnx_threads
        sessions = {p: onnxruntime.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                    for p in (fp32_path, fp16_path)}
        outputs, onnx_rtf = {}, {}
        for path, session in sessions.items():
            session.run(None, {"waveform": audio[0][None], "lengths": np.array([len(audio[0])])})
            start = time.perf_counter()
            outputs[path] = [session.run(None, {"waveform": a[None], "lengths": np.array([len(a)])})[0][0] for a in audio]
            onnx_rtf[path] = (time.perf_counter() - start) / seconds
        sizes = {path: path.stat().st_size for path in sessions}

    state = encoder.state_dict()
    changed = sum(int((t != t.half().float()).sum()) for t in state.values())
    upcast = WhisperBody(WhisperEncoder(encoder.config)).eval()
    upcast.encoder.load_state_dict({k: t.half().float() for k, t in state.items()})

    fixed = WhisperBody(encoder, WhisperFrontendConfig(clamp_reference="fixed", fixed_level=args.fixed_level)).eval()
    clip_levels, feature_diff, floored, frame_change = [], 0.0, [], []
    with torch.no_grad():
        for a in audio:
            waveform, lengths = torch.from_numpy(a)[None], torch.tensor([len(a)])
            own, _ = body.frontend(waveform, lengths)
            level, _ = fixed.frontend(waveform, lengths)
            clip_levels.append(float(own.max()) * 4 - 4)  # undo (x + 4) / 4
            feature_diff = max(feature_diff, float((own - level).abs().max()))
            # The floor max - 8 (log10) is own.max() - 2 after (x + 4) / 4.
            floored.append(float((own <= own.max() - 2 + 1e-6).float().mean()))
        for a, reference in zip(audio, eager):
            # Per encoder frame: |change| / |output|, so whisper's few large channels do not dominate.
            frame_change.append(np.linalg.norm(_encode(fixed, a) - reference, axis=-1) / np.linalg.norm(reference, axis=-1))
    change = np.concatenate(frame_change)

    def worst(results: list[np.ndarray]) -> float:
        return float(max(np.abs(r - e).max() for r, e in zip(results, eager)))

    report = {
        "clips": len(audio), "audio_seconds": round(seconds, 1),
        "eager_rtf": round(eager_rtf, 4), "torch_threads": args.torch_threads,
        "onnx_rtf": round(onnx_rtf[fp32_path], 4), "onnx_fp16_weights_rtf": round(onnx_rtf[fp16_path], 4),
        "onnx_threads": args.onnx_threads,
        "onnx_max_abs_vs_torch": worst(outputs[fp32_path]),
        "onnx_mb": round(sizes[fp32_path] / 1e6, 1),
        "onnx_fp16_weights_mb": round(sizes[fp16_path] / 1e6, 1),
        "onnx_fp16_weights_max_abs_vs_torch": worst(outputs[fp16_path]),
        "torch_fp16_weights_changed_elements": changed,
        "torch_fp16_weights_max_abs": worst([_encode(upcast, a) for a in audio]),
        "clip_max_log10_percentiles_5_50_95": [round(float(p), 2) for p in np.percentile(clip_levels, [5, 50, 95])],
        "fixed_level": args.fixed_level,
        "fixed_vs_clip_max_feature_max_abs": feature_diff,
        "floored_feature_fraction_clip_max_mean": float(np.mean(floored)),
        "fixed_vs_clip_max_frame_relative_change_median_p99_max": [
            round(float(v), 4) for v in (np.median(change), np.percentile(change, 99), change.max())],
        "fixed_vs_clip_max_frames_changed_over_10_percent": round(float((change > 0.1).mean()), 4),
        "encoder_frames": int(change.size),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_json(args.json, report, provenance)


if __name__ == "__main__":
    main()
