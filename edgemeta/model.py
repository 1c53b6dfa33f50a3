"""The recognizer: log-mel -> causal CNN (time subsampling) -> GRU -> adaptable head -> CTC.

The model is split in two named parts. The **body** (frontend, convolutions,
GRU) is frozen on the device; the **head** (:class:`Head`, the final layers) is
what Meta-SGD's inner loop and the device's enrollment adapt. Everything that
needs the split (meta-learner, exporter, runtime) goes through
:meth:`SpeechRecognizer.body`, :attr:`SpeechRecognizer.head` and
:func:`head_parameter_names`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgemeta.frontend import LogMelFrontend
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.text import VOCABULARY

HEAD_PREFIX = "head."


@dataclass
class ModelConfig:
    """Constructor arguments of :class:`SpeechRecognizer`; saved in every checkpoint and bundle."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    log_floor: float = 1e-6
    channels: int = 256
    blocks: int = 6
    kernel_size: int = 11
    expansion: int = 2
    subsampling: int = 2
    gru_hidden: int = 256
    gru_layers: int = 1
    bidirectional: bool = False
    head_hidden: bool = True
    vocab_size: int = len(VOCABULARY)
    tail_samples: int = 3200  # silence appended to every input (0.2 s): see SpeechRecognizer.log_mel

    @property
    def feature_size(self) -> int:
        """Width of the body's output, the head's input."""
        return self.gru_hidden * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict:
        return asdict(self)


class CausalConv1d(nn.Conv1d):
    """Conv1d whose output frame ``t`` sees inputs up to ``t`` only (left padding)."""

    @property
    def left_context(self) -> int:
        return self.kernel_size[0] - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_context, 0)))


class ConvBlock(nn.Module):
    """Residual depthwise-separable block: causal depthwise conv, LayerNorm, pointwise MLP."""

    def __init__(self, channels: int, kernel_size: int, expansion: int) -> None:
        super().__init__()
        self.depthwise = CausalConv1d(channels, channels, kernel_size, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, channels * expansion)
        self.project = nn.Linear(channels * expansion, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, frames, channels]
        y = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return x + self.project(F.gelu(self.expand(self.norm(y))))


class Head(nn.Module):
    """The adaptable final layers: per-unit scales (LHUC), a residual layer, the output layer.

    Input ``[batch, frames, feature_size]`` features from the body; output logits.
    The scales start at 0 (factor ``2 * sigmoid(0) = 1``), so a fresh head is
    the identity before the residual and output layers.
    """

    def __init__(self, feature_size: int, vocab_size: int, hidden: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(feature_size))
        self.hidden = nn.Linear(feature_size, feature_size) if hidden else None
        self.output = nn.Linear(feature_size, vocab_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = features * (2.0 * torch.sigmoid(self.scale))
        if self.hidden is not None:
            h = h + F.relu(self.hidden(h))
        return self.output(h)


class SpeechRecognizer(nn.Module):
    """Waveform ``[batch, samples]`` (+ lengths) -> CTC log-probabilities ``[batch, frames, vocab]``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.frontend = LogMelFrontend(c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.log_floor)
        self.subsample = CausalConv1d(c.n_mels, c.channels, 2 * c.subsampling + 1, stride=c.subsampling)
        self.blocks = nn.ModuleList(ConvBlock(c.channels, c.kernel_size, c.expansion) for _ in range(c.blocks))
        self.gru = nn.GRU(c.channels, c.gru_hidden, c.gru_layers, batch_first=True, bidirectional=c.bidirectional)
        self.head = Head(c.feature_size, c.vocab_size, c.head_hidden)

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for inputs of ``sample_lengths`` samples (the silent tail included)."""
        frames = torch.div(sample_lengths + self.config.tail_samples, self.config.hop_length, rounding_mode="floor")
        return torch.div(frames + self.config.subsampling - 1, self.config.subsampling, rounding_mode="floor")

    def encode(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised log-mel ``[batch, n_mels, frames]`` -> head input ``[batch, frames', feature_size]``.

        Causal convolutions and a unidirectional GRU never look at later
        (padding) frames; a bidirectional GRU is given packed sequences when
        ``frame_lengths`` (output frames) are known.
        """
        x = F.gelu(self.subsample(features)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        if self.config.bidirectional and frame_lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True, enforce_sorted=False)
            return nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])[0]
        return self.gru(x)[0]

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel of ``waveform`` followed by ``tail_samples`` of silence.

        The convolutions and the GRU are causal, so without a silent tail the
        last characters of a tightly cut clip would have no frames left to be
        emitted in; the tail gives every clip the same room to finish.
        """
        return self.frontend(F.pad(waveform, (0, self.config.tail_samples)))

    def body(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen part: waveform -> head input features ``[batch, frames, feature_size]``."""
        frame_lengths = None if lengths is None else self.frame_lengths(lengths)
        return self.encode(self.log_mel(waveform), frame_lengths)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return F.log_softmax(self.head(self.body(waveform, lengths)), dim=-1)


def head_parameter_names(model: SpeechRecognizer) -> list[str]:
    """Full names (``head.scale``, ...) of the parameters the device adapts."""
    return [HEAD_PREFIX + name for name, _ in model.head.named_parameters()]
