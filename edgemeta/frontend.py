"""Exportable log-mel frontend: STFT as a strided conv1d with a windowed DFT basis.

``torch.stft`` does not export to ONNX, so the spectrum is computed with a
convolution. Frames are causal: the waveform is left-padded with
``n_fft - hop_length`` zeros, so frame ``t`` ends at sample ``(t + 1) * hop_length``
and ``N`` samples give ``N // hop_length`` frames. That makes the frontend
streamable with a carried context of ``n_fft - hop_length`` samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """HTK-scale triangular filters, ``[n_freqs, n_mels]``, computed as torchaudio's ``melscale_fbanks`` (float32)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    top_mel = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    mels = torch.linspace(0.0, top_mel, n_mels + 2)
    points = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    slopes = points[None, :] - freqs[:, None]
    widths = points[1:] - points[:-1]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class LogMelFrontend(nn.Module):
    """Waveform ``[batch, samples]`` -> normalised log-mel ``[batch, n_mels, frames]``."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, log_floor: float) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.log_floor = n_fft, hop_length, log_floor
        n_freqs = n_fft // 2 + 1
        time = torch.arange(n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * time / n_fft)  # periodic Hann, as torch.hann_window
        angle = 2 * math.pi * torch.arange(n_freqs, dtype=torch.float64)[:, None] * time[None, :] / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        self.register_buffer("dft_basis", basis.float().unsqueeze(1))
        self.register_buffer("mel_basis", mel_filterbank(n_freqs, n_mels, sample_rate).T.contiguous())
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))

    @property
    def context(self) -> int:
        """Samples of left context a frame needs beyond its own hop."""
        return self.n_fft - self.hop_length

    def log_mel(self, padded: torch.Tensor) -> torch.Tensor:
        """Un-normalised ``log(mel power + floor)`` of already left-padded audio (no centring)."""
        spectrum = F.conv1d(padded.unsqueeze(1), self.dft_basis, stride=self.hop_length)
        real, imag = spectrum.chunk(2, dim=1)
        power = real * real + imag * imag
        mel = torch.matmul(self.mel_basis, power)
        return torch.log(mel + self.log_floor)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.log_mel(F.pad(waveform, (self.context, 0)))
        return (features - self.feature_mean[:, None]) / self.feature_std[:, None]
