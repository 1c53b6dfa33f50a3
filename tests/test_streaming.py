"""Streaming: chunk + carried state gives exactly the whole-utterance result, in PyTorch and in stream.onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from edgemeta.export import parity
from edgemeta.model import ModelConfig, SpeechRecognizer, StreamingRecognizer
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.streaming import GraphStream
from export_fixtures import bundle_dir, exported_model, one_torch_thread  # noqa: F401 (fixtures)
from conftest import TINY_CONFIG

CONFIGS = {
    "tiny": TINY_CONFIG,
    "stride3-2layers-nfft512": {**TINY_CONFIG, "subsampling": 3, "gru_layers": 2, "n_fft": 512, "kernel_size": 4},
}


def stream_in_chunks(streamer: StreamingRecognizer, waveform: torch.Tensor, chunk_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_probs, features) of ``waveform`` ``[batch, samples]`` fed in chunks with the state carried, as the device feeds
    ``stream.onnx`` (:class:`GraphStream`): flushed with the silent tail, zero-padded to a whole chunk multiple."""
    waveform = F.pad(waveform, (0, streamer.tail_samples))
    waveform = F.pad(waveform, (0, -waveform.shape[1] % streamer.chunk_multiple))
    state = streamer.initial_state(waveform.shape[0])
    log_probs, features = [], []
    for start in range(0, waveform.shape[1], chunk_samples):
        out = streamer(waveform[:, start : start + chunk_samples], *state)
        log_probs.append(out[0])
        features.append(out[1])
        state = list(out[2:])
    return torch.cat(log_probs, dim=1), torch.cat(features, dim=1)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_torch_streaming_equals_whole_utterance(config: dict) -> None:
    torch.manual_seed(0)
    model = SpeechRecognizer(ModelConfig(**config)).eval()
    streamer = StreamingRecognizer(model)
    waveform = torch.from_numpy(np.stack(parity.synthetic_clips(16000, seconds=(1.13, 1.13), seed=2)))
    frames = int(model.frame_lengths(torch.tensor([waveform.shape[1]]))[0])
    with torch.no_grad():
        whole = model(waveform)
        features = model.body(waveform)
        for chunk in (streamer.chunk_multiple, streamer.chunk_multiple * 5, waveform.shape[1] + streamer.chunk_multiple):
            chunk -= chunk % streamer.chunk_multiple
            log_probs, streamed_features = stream_in_chunks(streamer, waveform, chunk)
            torch.testing.assert_close(log_probs[:, :frames], whole[:, :frames], atol=1e-5, rtol=0)
            torch.testing.assert_close(streamed_features[:, :frames], features[:, :frames], atol=1e-5, rtol=0)


def test_bidirectional_models_are_refused() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        StreamingRecognizer(SpeechRecognizer(ModelConfig(**TINY_CONFIG, bidirectional=True)))


@pytest.mark.parametrize("injected", [False, True], ids=["base-head", "injected-head"])
def test_stream_onnx_chunked_equals_whole_utterance(bundle_dir: Path, exported_model: SpeechRecognizer, injected: bool) -> None:
    bundle = load_bundle(bundle_dir)
    weights = parity.perturbed(bundle.head_weights(), seed=4, scale=0.2) if injected else None
    clips = parity.synthetic_clips(16000, seconds=(0.4, 1.37, 2.2), seed=9)
    session = bundle.stream_session()
    for chunk in (bundle.streaming["chunk_multiple"], bundle.streaming["chunk_samples"], bundle.streaming["chunk_multiple"] * 11):
        report = parity.compare_stream(exported_model, bundle, clips, weights, chunk_samples=chunk, session=session)
        assert report.passed(), report


def test_stream_onnx_batches_streams_and_uses_the_adapted_head(bundle_dir: Path) -> None:
    """Two streams in one batch, fed with the same adapted head the whole-utterance graph uses."""
    bundle = load_bundle(bundle_dir)
    adapted = parity.perturbed(bundle.head_weights(), seed=8, scale=0.2)
    waveform = np.stack(parity.synthetic_clips(16000, seconds=(1.28, 1.28), seed=3))
    streamed = GraphStream(bundle, adapted, batch=2).run(waveform)
    whole, _, frames = bundle.session().run(None, {"waveform": waveform, "lengths": np.array([waveform.shape[1]] * 2), **bundle.head_inputs(adapted)})
    n = int(frames[0])
    np.testing.assert_allclose(streamed[:, :n], whole[:, :n], atol=1e-4, rtol=0)


def test_audio_pushed_piece_by_piece_streams_as_one_push(bundle_dir: Path) -> None:
    """Live audio arrives in odd-sized pieces: the graph sees the same chunks, and the end is flushed with the silent tail."""
    bundle = load_bundle(bundle_dir)
    clip = parity.synthetic_clips(16000, seconds=(1.37,), seed=6)[0]
    stream = GraphStream(bundle)
    whole = stream.run(clip)
    stream.reset()
    for start in range(0, len(clip), 777):
        stream.push(clip[start : start + 777], last=start + 777 >= len(clip))
    np.testing.assert_array_equal(stream.log_probs(), whole)
    flushed = len(clip) + bundle.streaming["tail_samples"]
    assert whole.shape[1] * bundle.streaming["chunk_multiple"] == flushed + -flushed % bundle.streaming["chunk_multiple"]
    with pytest.raises(ValueError, match="multiple"):
        GraphStream(bundle, chunk_samples=bundle.streaming["chunk_multiple"] + 1)
