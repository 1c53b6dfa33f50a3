"""Chunk-by-chunk inference for unidirectional models, exactly equal to whole-utterance inference.

Every layer of a unidirectional :class:`SpeechRecognizer` is causal, so an
utterance can be fed in chunks if each layer is given what it saw last time:

- the frontend: the last ``audio_context`` samples (a whole number of hops
  covering the STFT window's overlap),
- the subsampling conv: the last ``subsample_context`` log-mel frames (a whole
  number of strides covering its kernel),
- each conv block: its last ``kernel_size - 1`` input frames,
- the GRU: its hidden state.

Each stage runs the model's own module on ``context + chunk`` and drops the
outputs that belong to the context, so no layer's arithmetic is re-written
here. The initial state is all zeros, which is exactly the zero left-padding
whole-utterance inference uses. A chunk must hold a multiple of
:attr:`StreamingRecognizer.chunk_multiple` samples; pad the last one with
zeros: the first ``model.frame_lengths(N)`` output frames of ``N`` samples fed
that way equal the whole-utterance output's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edgemeta.model import SpeechRecognizer


class StreamingRecognizer(nn.Module):
    """``(chunk [batch, samples], *state) -> (log_probs, features, *new_state)`` for a unidirectional model.

    State tensors are batch-first (see :meth:`state_shapes`), so the device can
    treat them uniformly; the GRU's is transposed inside.
    """

    def __init__(self, model: SpeechRecognizer) -> None:
        super().__init__()
        if model.config.bidirectional:
            raise ValueError("a bidirectional model needs the whole utterance: it cannot stream")
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
            "state.audio": (self.audio_context,),
            "state.subsample": (config.n_mels, self.subsample_context),
        }
        for index, context in enumerate(self.block_contexts):
            shapes[f"state.block{index}"] = (context, config.channels)
        shapes["state.gru"] = (config.gru_layers, config.gru_hidden)
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


def stream_utterance(streamer: StreamingRecognizer, waveform: torch.Tensor, chunk_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ``waveform`` ``[batch, samples]`` in chunks of ``chunk_samples``; return (log_probs, features) concatenated.

    The end is flushed with the model's silent tail (``tail_samples``) and
    zero-padded to a whole chunk multiple; the caller trims to
    ``model.frame_lengths`` to compare with whole-utterance inference.
    """
    if chunk_samples % streamer.chunk_multiple:
        raise ValueError(f"chunk_samples {chunk_samples} is not a multiple of {streamer.chunk_multiple}")
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
