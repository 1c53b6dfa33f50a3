"""The whisper body: log-mel front end + encoder, waveform batch in, 50 encoder frames/s out."""

from __future__ import annotations

import torch
from torch import nn

from edgemeta.bodies.whisper_encoder import WhisperEncoder
from edgemeta.bodies.whisper_frontend import HOP_LENGTH, WhisperFrontendConfig, WhisperLogMel
from edgemeta.runtime.audio import SAMPLE_RATE

# 100 mel frames/s, halved by the encoder's strided convolution.
ENCODER_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH // 2


class WhisperBody(nn.Module):
    """Waveform ``[batch, samples]`` at 16 kHz + lengths -> ``([batch, frames, width], frame lengths)``.

    Each clip (at most 30 s) gets the frames it gets alone; frames past its length are undefined.
    """

    def __init__(self, encoder: WhisperEncoder, frontend: WhisperFrontendConfig = WhisperFrontendConfig()) -> None:
        super().__init__()
        if frontend.n_mels != encoder.config.n_mels:
            raise ValueError(f"front end gives {frontend.n_mels} mel bins, the encoder takes {encoder.config.n_mels}")
        self.frontend = WhisperLogMel(frontend)
        self.encoder = encoder

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``blocks``: stop after that many encoder blocks (see :meth:`WhisperEncoder.forward`); default the whole encoder."""
        return self.encoder(*self.frontend(waveform, lengths), blocks=blocks)
