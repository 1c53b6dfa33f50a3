import torch
import torchaudio
from torch.nn import functional as F

from edgemeta.frontend import LogMelFrontend, mel_filterbank


def test_mel_filterbank_matches_torchaudio():
    ours = mel_filterbank(201, 80, 16000)
    ref = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_log_mel_matches_torchaudio_within_1e4():
    """Same frames as MelSpectrogram(center=False) on the left-padded signal; log floor 1e-6; float64."""
    frontend = LogMelFrontend(16000, 400, 160, 80, 1e-6).double()
    waveform = 0.1 * torch.randn(3, 16000, dtype=torch.float64)
    padded = F.pad(waveform, (frontend.context, 0))
    reference = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80, center=False).double()
    expected = torch.log(reference(padded) + 1e-6)
    ours = frontend.log_mel(padded)
    assert ours.shape == expected.shape == (3, 80, 100)
    assert (ours - expected).abs().max() < 1e-4


def test_frontend_is_causal_and_frames_are_samples_over_hop():
    frontend = LogMelFrontend(16000, 400, 160, 40, 1e-6)
    x = torch.randn(1, 3200)
    full = frontend(x)
    assert full.shape[-1] == 3200 // 160
    changed = x.clone()
    changed[:, 1600:] = 0
    assert torch.equal(frontend(changed)[..., :10], full[..., :10])  # frames ending before sample 1600
