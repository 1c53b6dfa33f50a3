import pytest
import torch

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint, save_checkpoint
from edgemeta.model import ModelConfig, SpeechRecognizer, StreamingRecognizer, head_parameter_names


def test_shapes_frame_lengths_and_head_split(tiny_model):
    waveform = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 9000])
    log_probs = tiny_model(waveform, lengths)
    assert log_probs.shape == (2, 60, 29)
    assert tiny_model.frame_lengths(lengths).tolist() == [60, 38]  # + the 0.2 s silent tail
    features = tiny_model.body(waveform, lengths)
    assert torch.allclose(torch.log_softmax(tiny_model.head(features), -1), log_probs)
    assert head_parameter_names(tiny_model) == ["head.scale", "head.hidden.weight", "head.hidden.bias", "head.output.weight", "head.output.bias"]


def test_padding_does_not_change_valid_frames(tiny_model):
    x = torch.randn(1, 8000)
    alone = tiny_model(x)
    padded = tiny_model(torch.cat([x, torch.randn(1, 8000)], dim=1))
    own_frames = 8000 // 320  # the frames after them see the silent tail in one case, noise in the other
    assert torch.allclose(padded[:, :own_frames], alone[:, :own_frames], atol=1e-5)


def test_checkpoint_rebuilds_its_own_model(tiny_model, tmp_path):
    save_checkpoint(tmp_path / "c.pt", new_checkpoint(tiny_model, "pretrained", 3, ["b", "a"]))
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint["training_speakers"] == ["a", "b"]
    rebuilt = model_from_checkpoint(checkpoint).eval()
    x = torch.randn(1, 4000)
    assert torch.equal(rebuilt(x), tiny_model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_whisper_body_gives_each_clip_of_a_padded_batch_its_own_frames() -> None:
    """The whisper body (random weights: the importers and parity are tested in test_whisper_body.py)."""
    from edgemeta.model import WHISPER_TINY_EN

    torch.manual_seed(0)
    config = ModelConfig(body=WHISPER_TINY_EN, whisper={"width": 64, "heads": 2, "layers": 2}, gru_hidden=32)
    model = SpeechRecognizer(config).eval()
    assert not any(p.requires_grad for p in model.whisper.parameters())  # frozen by default
    waveforms = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9000])
    with torch.no_grad():
        batch = model(waveforms, lengths)
        alone = model(waveforms[1:, :9000], lengths[1:])
    assert model.frame_lengths(lengths).tolist() == [50, 28]  # 100 mel frames/s, halved by the encoder
    assert alone.shape[1] == 28
    torch.testing.assert_close(batch[1, :28], alone[0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="cannot stream"):
        StreamingRecognizer(model)


def test_unknown_body_is_named() -> None:
    with pytest.raises(ValueError, match="unknown body 'wav2vec'"):
        ModelConfig(body="wav2vec")
