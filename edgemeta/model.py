"""The recognizer: a body (chosen by name) -> GRU -> adaptable head -> CTC.

Two bodies (:data:`BODIES`): ``cnn-gru`` (log-mel -> causal CNN with time
subsampling, trained from scratch: it streams chunk by chunk) and
``whisper-tiny.en`` (whisper's log-mel front end and pretrained encoder,
frozen by default, 50 frames/s: it sees whole segments of at most 30 s).
Either way a GRU follows and the model is split in two named parts. The
**body** (everything up to the GRU's output) is frozen on the device; the
**head** (:class:`Head`, the final layers) is what Meta-SGD's inner loop and
the device's enrollment adapt. Everything that needs the split (meta-learner,
exporter, runtime) goes through :meth:`SpeechRecognizer.body`,
:attr:`SpeechRecognizer.head` and :func:`head_parameter_names`; training on
cached encoder outputs goes through :meth:`SpeechRecognizer.acoustic_features`
and :meth:`SpeechRecognizer.encode`. :class:`StreamingRecognizer` runs a
``cnn-gru`` model's modules chunk by chunk (the bundle's ``stream.onnx``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from edgemeta.bodies.whisper_body import ENCODER_FRAMES_PER_SECOND, WhisperBody
from edgemeta.bodies.whisper_encoder import WhisperEncoder, WhisperEncoderConfig, encoder_frames
from edgemeta.frontend import LogMelFrontend
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.bundle_format import HEAD_PREFIX, state_name
from edgemeta.runtime.text import VOCABULARY


CNN_GRU = "cnn-gru"
WHISPER_TINY_EN = "whisper-tiny.en"
BODIES = (CNN_GRU, WHISPER_TINY_EN)


@dataclass
class ModelConfig:
    """Constructor arguments of :class:`SpeechRecognizer`; saved in every checkpoint and bundle.

    ``body`` picks the body; the log-mel, CNN and ``tail_samples`` fields are
    ``cnn-gru``'s, ``whisper`` holds the encoder's dimensions
    (:class:`~edgemeta.bodies.whisper_encoder.WhisperEncoderConfig` fields;
    empty: tiny.en) and ``train_encoder_blocks`` how many of its last blocks
    pretraining may train (0: frozen).
    """

    body: str = CNN_GRU
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
    whisper: dict = field(default_factory=dict)
    train_encoder_blocks: int = 0

    def __post_init__(self) -> None:
        if self.body not in BODIES:
            raise ValueError(f"unknown body {self.body!r}: one of {', '.join(BODIES)}")
        if self.train_encoder_blocks and (self.body != WHISPER_TINY_EN or not 0 < self.train_encoder_blocks <= self.encoder_config.layers):
            raise ValueError(f"train_encoder_blocks={self.train_encoder_blocks}: a {WHISPER_TINY_EN} body trains 0 to "
                             f"{self.encoder_config.layers} of its encoder blocks, a {self.body} body has none")
        if self.body == WHISPER_TINY_EN and self.bidirectional:
            raise ValueError("the whisper body's GRU is unidirectional: the encoder already sees the whole segment")

    @property
    def encoder_config(self) -> WhisperEncoderConfig:
        """The whisper encoder's dimensions (``whisper-tiny.en`` body)."""
        return WhisperEncoderConfig(**self.whisper)

    @property
    def frozen_encoder_blocks(self) -> int:
        """The whisper encoder's blocks that never train (what :meth:`SpeechRecognizer.acoustic_features` runs)."""
        return self.encoder_config.layers - self.train_encoder_blocks

    @property
    def trained_encoder_prefixes(self) -> tuple[str, ...]:
        """The encoder's state-dict prefixes that pretraining trains: its last ``train_encoder_blocks`` blocks and final LayerNorm."""
        if not self.train_encoder_blocks:
            return ()
        return tuple(f"blocks.{i}." for i in range(self.frozen_encoder_blocks, self.encoder_config.layers)) + ("final_norm.",)

    @property
    def max_segment_seconds(self) -> float | None:
        """The longest audio one run takes (the whisper encoder's 30 s positional table); ``None``: no limit."""
        if self.body != WHISPER_TINY_EN:
            return None
        return self.encoder_config.max_frames / ENCODER_FRAMES_PER_SECOND

    @property
    def streams(self) -> bool:
        """Whether the model can run chunk by chunk (``stream.onnx``): causal layers only."""
        return self.body == CNN_GRU and not self.bidirectional

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
        if c.body == WHISPER_TINY_EN:
            # Random weights here: new_model() loads the pretrained ones, a checkpoint its own copy.
            self.whisper = WhisperBody(WhisperEncoder(c.encoder_config))
            self.whisper.requires_grad_(False)
            for name, parameter in self.whisper.encoder.named_parameters():
                parameter.requires_grad_(name.startswith(c.trained_encoder_prefixes))
            gru_input = c.encoder_config.width
        else:
            self.frontend = LogMelFrontend(c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.log_floor)
            self.subsample = CausalConv1d(c.n_mels, c.channels, 2 * c.subsampling + 1, stride=c.subsampling)
            self.blocks = nn.ModuleList(ConvBlock(c.channels, c.kernel_size, c.expansion) for _ in range(c.blocks))
            gru_input = c.channels
        self.gru = nn.GRU(gru_input, c.gru_hidden, c.gru_layers, batch_first=True, bidirectional=c.bidirectional)
        self.head = Head(c.feature_size, c.vocab_size, c.head_hidden)

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for inputs of ``sample_lengths`` samples (``cnn-gru``: the silent tail included)."""
        if self.config.body == WHISPER_TINY_EN:
            return encoder_frames(torch.div(sample_lengths, self.config.hop_length, rounding_mode="floor"))
        frames = torch.div(sample_lengths + self.config.tail_samples, self.config.hop_length, rounding_mode="floor")
        return torch.div(frames + self.config.subsampling - 1, self.config.subsampling, rounding_mode="floor")

    def acoustic_features(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """What :meth:`encode` takes: ``cnn-gru`` the normalised log-mel ``[batch, n_mels, frames]`` (silent
        tail included), ``whisper-tiny.en`` the output ``[batch, frames, width]`` of the encoder's frozen blocks
        (all of them, final LayerNorm included, unless ``train_encoder_blocks``): what training caches."""
        if self.config.body == WHISPER_TINY_EN:
            if lengths is None:
                lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long, device=waveform.device)
            return self.whisper(waveform, lengths, blocks=self.config.frozen_encoder_blocks)[0]
        return self.log_mel(waveform)

    def gru_input(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`acoustic_features` -> the GRU's input ``[batch, frames', channels]``.

        ``whisper-tiny.en``: the encoder's trained blocks and final LayerNorm, if
        any (``frame_lengths`` marks a batch's padding), else the features as they are.
        """
        if self.config.body == WHISPER_TINY_EN:
            if not self.config.train_encoder_blocks:
                return features
            return self.whisper.encoder.resume(features, frame_lengths, self.config.frozen_encoder_blocks)
        x = F.gelu(self.subsample(features)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return x

    def encode(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`acoustic_features` -> head input ``[batch, frames', feature_size]``.

        Causal convolutions and a unidirectional GRU never look at later
        (padding) frames; a bidirectional GRU is given packed sequences when
        ``frame_lengths`` (output frames) are known.
        """
        x = self.gru_input(features, frame_lengths)
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
        return self.encode(self.acoustic_features(waveform, lengths), frame_lengths)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return F.log_softmax(self.head(self.body(waveform, lengths)), dim=-1)


def new_model(config: ModelConfig) -> SpeechRecognizer:
    """A fresh model: random weights, except a ``whisper-tiny.en`` body's pretrained encoder (sha256 checked)."""
    model = SpeechRecognizer(config)
    if config.body == WHISPER_TINY_EN:
        from edgemeta.bodies.whisper_weights import load_packaged_tiny_en

        model.whisper.encoder.load_state_dict(load_packaged_tiny_en().state_dict())
    return model


def head_parameter_names(model: SpeechRecognizer) -> list[str]:
    """Full names (``head.scale``, ...) of the parameters the device adapts."""
    return [HEAD_PREFIX + name for name, _ in model.head.named_parameters()]


class StreamingRecognizer(nn.Module):
    """``(chunk [batch, samples], *state) -> (log_probs, features, *new_state)`` for a unidirectional model.

    Chunk-by-chunk inference, exactly equal to whole-utterance inference:
    every layer of a unidirectional :class:`SpeechRecognizer` is causal, so an
    utterance can be fed in chunks if each layer is given what it saw last
    time: the frontend the last ``audio_context`` samples (a whole number of
    hops covering the STFT window's overlap), the subsampling conv the last
    ``subsample_context`` log-mel frames (a whole number of strides covering
    its kernel), each conv block its last ``kernel_size - 1`` input frames,
    the GRU its hidden state. Each stage runs the model's own module on
    ``context + chunk`` and drops the outputs that belong to the context, so
    no layer's arithmetic is written twice. The initial state is all zeros,
    exactly the zero left-padding whole-utterance inference uses. A chunk
    must hold a multiple of :attr:`chunk_multiple` samples; pad the last one
    with zeros: the first ``model.frame_lengths(N)`` output frames of ``N``
    samples fed that way equal the whole-utterance output's.

    State tensors are batch-first (see :meth:`state_shapes`), so the device can
    treat them uniformly; the GRU's is transposed inside.
    """

    def __init__(self, model: SpeechRecognizer) -> None:
        super().__init__()
        if not model.config.streams:
            raise ValueError(f"a {model.config.body} body{' with a bidirectional GRU' if model.config.bidirectional else ''} "
                             "needs the whole utterance: it cannot stream")
        self.model = model
        config = model.config
        self.hop_length = config.hop_length
        self.tail_samples = config.tail_samples
        self.audio_context = math.ceil(model.frontend.context / config.hop_length) * config.hop_length
        stride = model.subsample.stride[0]
        self.subsample_context = math.ceil(model.subsample.left_context / stride) * stride
        self.subsample_drop = self.subsample_context // stride
        self.block_contexts = [block.depthwise.left_context for block in model.blocks]

    @property
    def chunk_multiple(self) -> int:
        """Chunks must hold a multiple of this many samples (one output frame)."""
        return self.hop_length * self.model.subsample.stride[0]

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape without the leading batch axis, in input order."""
        config = self.model.config
        shapes = {
            state_name("audio"): (self.audio_context,),
            state_name("subsample"): (config.n_mels, self.subsample_context),
        }
        for index, context in enumerate(self.block_contexts):
            shapes[state_name(f"block{index}")] = (context, config.channels)
        shapes[state_name("gru")] = (config.gru_layers, config.gru_hidden)
        return shapes

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """All-zero state for ``batch`` new streams, in :meth:`state_shapes` order."""
        return [torch.zeros(batch, *shape) for shape in self.state_shapes().values()]

    def forward(self, chunk: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        audio, mel_context, *rest = state
        block_state, gru_state = rest[:-1], rest[-1]
        model = self.model

        audio = torch.cat([audio, chunk], dim=1)
        mel = model.frontend(audio)[:, :, self.audio_context // self.hop_length :]
        new_audio = audio[:, audio.shape[1] - self.audio_context :]

        mel = torch.cat([mel_context, mel], dim=2)
        x = F.gelu(model.subsample(mel))[:, :, self.subsample_drop :].transpose(1, 2)
        new_state = [new_audio, mel[:, :, mel.shape[2] - self.subsample_context :]]

        for block, context, previous in zip(model.blocks, self.block_contexts, block_state):
            x = torch.cat([previous, x], dim=1)
            new_state.append(x[:, x.shape[1] - context :])
            x = block(x)[:, context:]

        features, hidden = model.gru(x, gru_state.transpose(0, 1).contiguous())
        new_state.append(hidden.transpose(0, 1))
        log_probs = F.log_softmax(model.head(features), dim=-1)
        return (log_probs, features, *new_state)

