"""Whisper's audio encoder as a plain ``nn.Module``, fed one clip or a padded batch with lengths.

The architecture is OpenAI whisper's (MIT): two GELU convolutions (the second halves the frame
rate to 50 frames/s), positional encodings, pre-norm transformer blocks and a final LayerNorm.
Unlike whisper, a clip is not padded to 30 s: its positional encodings are sliced to its length.
In a padded batch the frames past a clip's end are zeroed before each convolution and masked
out of attention, so every clip gets the outputs it gets alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class WhisperEncoderConfig:
    """Encoder dimensions; the defaults are whisper tiny / tiny.en."""

    n_mels: int = 80
    width: int = 384
    heads: int = 6
    layers: int = 4
    max_frames: int = 1500  # 30 s at 50 encoder frames/s: the positional table's length


def frame_mask(lengths: torch.Tensor, frames: int | torch.Tensor) -> torch.Tensor:
    """``[batch, frames]`` booleans, true on the first ``lengths[b]`` frames of row ``b``."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def encoder_frames(mel_frames: torch.Tensor) -> torch.Tensor:
    """Encoder frames for ``mel_frames`` log-mel frames (conv2: kernel 3, stride 2, padding 1)."""
    return torch.div(mel_frames + 1, 2, rounding_mode="floor")


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused q, k, v (CTranslate2's layout; whisper's key has no bias)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        # Python ints, not shapes read from tensors: the ONNX graph keeps them static.
        self.width, self.heads, self.head_width = width, heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, time = x.shape[0], x.shape[1]
        q, k, v = self.qkv(x).view(batch, time, 3, self.heads, self.head_width).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.out(y.transpose(1, 2).reshape(batch, time, self.width))


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + FFN(LN(x))`` with a 4x GELU FFN."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_mask)
        return x + self.ffn(self.ffn_norm(x))


class WhisperEncoder(nn.Module):
    """Log-mel ``[batch, n_mels, mel_frames]`` (+ lengths) -> ``([batch, frames, width], frame lengths)``."""

    def __init__(self, config: WhisperEncoderConfig = WhisperEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.width, config.width, kernel_size=3, stride=2, padding=1)
        # Whisper's table is fixed (sinusoids); it comes from the weights, so it is state, not a parameter.
        self.register_buffer("positions", torch.zeros(config.max_frames, config.width))
        self.blocks = nn.ModuleList(EncoderBlock(config.width, config.heads) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(config.width)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None, blocks: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode log-mel frames; ``lengths`` (mel frames per clip) marks the padding of a batch.

        Without ``lengths`` every frame is valid (one clip, or whisper's 30 s window).
        At most ``2 * max_frames`` mel frames (30 s). ``blocks``: run only the first
        ``blocks`` blocks and skip the final LayerNorm (the input of the next
        block, for :meth:`resume`); default all of them.
        """
        if not torch.jit.is_tracing() and features.shape[-1] > 2 * self.config.max_frames:
            raise ValueError(f"{features.shape[-1]} mel frames exceed the encoder's {2 * self.config.max_frames} (30 s)")
        if lengths is None:
            x = F.gelu(self.conv2(F.gelu(self.conv1(features))))
            out_lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.long)
        else:
            # Zeroed frames past the end stand for the zero padding each convolution sees on the clip alone.
            hidden = F.gelu(self.conv1(features * frame_mask(lengths, features.shape[-1])[:, None, :]))
            x = F.gelu(self.conv2(hidden * frame_mask(lengths, hidden.shape[-1])[:, None, :]))
            out_lengths = encoder_frames(lengths)
        x = x.transpose(1, 2) + self.positions[: x.shape[-1]]
        stop = len(self.blocks) if blocks is None else blocks
        x = self._run_blocks(x, None if lengths is None else out_lengths, 0, stop)
        return (self.final_norm(x) if stop == len(self.blocks) else x), out_lengths

    def resume(self, x: torch.Tensor, frame_lengths: torch.Tensor | None, start: int) -> torch.Tensor:
        """Finish what ``forward(..., blocks=start)`` began: blocks ``start..`` and the final LayerNorm.

        ``frame_lengths`` (encoder frames per clip) marks the padding of a batch; ``None``: every frame is valid.
        """
        return self.final_norm(self._run_blocks(x, frame_lengths, start, len(self.blocks)))

    def _run_blocks(self, x: torch.Tensor, frame_lengths: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
        key_mask = None if frame_lengths is None else frame_mask(frame_lengths, x.shape[1])[:, None, None, :]
        for block in self.blocks[start:stop]:
            x = block(x, key_mask)
        return x
