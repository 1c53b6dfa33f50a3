"""Whisper's log-mel front end in ONNX-exportable ops, for one clip or a padded batch with lengths.

Matches whisper's ``log_mel_spectrogram`` (and faster-whisper's ``FeatureExtractor`` with
``padding=0``): 16 kHz, periodic Hann window of 400 samples, hop 160, each clip reflect-padded by
200 samples at both of its own ends, the last frame dropped (``samples // 160`` frames, 100/s),
power spectrum, librosa's Slaney mel filterbank (80 bins), ``log10(max(mel, 1e-10))``, a floor
8 decades below a reference level, then ``(x + 4) / 4``.

``torch.stft`` does not export to ONNX, so the spectrum is a strided conv1d with a windowed DFT
basis, and the per-clip reflection is a gather. The floor's reference is either the clip's own
maximum (what whisper computes over a 30 s window, which for a clip padded with silence is the
clip's maximum) or a fixed level that a stream can use before it has seen the whole utterance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgemeta.bodies.whisper_encoder import frame_mask
from edgemeta.runtime.audio import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
LOG_FLOOR = -10.0  # log10 of whisper's 1e-10 power clamp
DYNAMIC_RANGE = 8.0  # decades kept below the reference level


@dataclass(frozen=True)
class WhisperFrontendConfig:
    """Mel bins and the reference level of the ``max - 8`` floor (``fixed_level`` in log10 power)."""

    n_mels: int = 80
    clamp_reference: Literal["clip_max", "fixed"] = "clip_max"
    # Median of the clip maxima of 200 speechocean762 clips (5-95 %: -0.14..1.64).
    fixed_level: float = 0.9


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    linear = hz / (200.0 / 3.0)
    log_region = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_region, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3.0)
    log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


def slaney_mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = 80) -> np.ndarray:
    """Librosa's default mel filters (Slaney scale and area normalisation), ``[n_mels, n_fft // 2 + 1]`` float64."""
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = _slaney_mel_to_hz(np.linspace(0.0, _hz_to_slaney_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    rising = (fft_hz[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class WhisperLogMel(nn.Module):
    """Waveform ``[batch, samples]`` at 16 kHz (+ lengths) -> ``([batch, n_mels, frames], frame lengths)``.

    Frames past a clip's end are zero, as the encoder's convolutions expect.
    """

    def __init__(self, config: WhisperFrontendConfig = WhisperFrontendConfig()) -> None:
        super().__init__()
        self.config = config
        time = torch.arange(N_FFT, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * time / N_FFT)  # periodic Hann, as whisper's
        angle = 2 * math.pi * torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None] * time[None, :] / N_FFT
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        self.register_buffer("dft_basis", basis.float().unsqueeze(1), persistent=False)
        mel = torch.from_numpy(slaney_mel_filterbank(SAMPLE_RATE, N_FFT, config.n_mels))
        self.register_buffer("mel_basis", mel.float(), persistent=False)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel of each clip as whisper computes it for that clip alone; ``lengths`` in samples."""
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long)
        half = N_FFT // 2
        # Each clip reflects at its own end, not at the batch's: gather indices mirrored per row.
        index = (torch.arange(waveform.shape[1] + 2 * half, device=waveform.device) - half).abs()[None, :]
        last = (lengths - 1)[:, None]
        index = torch.where(index > last, 2 * last - index, index).clamp(min=0)
        padded = torch.gather(waveform, 1, index)
        spectrum = F.conv1d(padded.unsqueeze(1), self.dft_basis, stride=HOP_LENGTH)[..., :-1]
        real, imag = spectrum.chunk(2, dim=1)
        log_mel = torch.log10(torch.matmul(self.mel_basis, real * real + imag * imag).clamp(min=1e-10))
        mel_lengths = torch.div(lengths, HOP_LENGTH, rounding_mode="floor")
        valid = frame_mask(mel_lengths, log_mel.shape[-1])[:, None, :]
        if self.config.clamp_reference == "clip_max":
            # LOG_FLOOR is the least log_mel can be, so filling the padding with it leaves each max alone.
            reference = log_mel.masked_fill(~valid, LOG_FLOOR).amax(dim=(1, 2), keepdim=True)
        else:
            reference = torch.tensor(self.config.fixed_level)
        features = (torch.maximum(log_mel, reference - DYNAMIC_RANGE) + 4.0) / 4.0
        return features * valid, mel_lengths
