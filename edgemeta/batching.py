"""Length-bucketed batches and padding of utterances into tensors."""

from __future__ import annotations

import numpy as np
import torch

from edgemeta.runtime.ctc_loss import concatenated_targets
from edgemeta.runtime.text import encode


def length_buckets(lengths: list[int], max_samples: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices grouped by similar length so that ``batch size * longest <= max_samples``; batch order shuffled."""
    order = np.argsort(np.asarray(lengths) + rng.uniform(0, 1600, len(lengths)))
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, lengths[index])
        if current and longest_if_added * (len(current) + 1) > max_samples:
            batches.append(current)
            current, longest_if_added = [], lengths[index]
        current.append(int(index))
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def pad_audio(audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad waveforms with zeros: ``([batch, samples], lengths)``."""
    lengths = torch.tensor([len(a) for a in audios], dtype=torch.long)
    batch = torch.zeros(len(audios), int(lengths.max()))
    for row, audio in enumerate(audios):
        batch[row, : len(audio)] = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    return batch, lengths


def pad_targets(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC targets of normalised texts: ``(concatenated ids, lengths)``."""
    return concatenated_targets([encode(t) for t in texts])
