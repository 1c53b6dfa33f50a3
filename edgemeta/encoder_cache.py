"""Whisper encoder outputs cached per clip and per augmentation variant, so that training costs only the GRU and head.

A frozen encoder gives a clip the same outputs on every epoch, so they are
computed once (fp16) and read back by pretraining, meta-training and the
fine-tuning rate's selection. Each clip has a ``clean`` variant and, on
request, a few augmented ones (speed, then noise, reverberation, 8 kHz band
limit and gain: :func:`~edgemeta.augment.random_augment`), each drawn from a
generator seeded by the clip and the variant's number, so a variant is the
same audio on every machine and every rebuild.

Layout: ``$XDG_CACHE_HOME/edgemeta/encoder/<encoder id>/<variant>/<chunk>.npz``
(never beside a manifest: shared corpora are read-only). The encoder id is
the sha256 of the frozen encoder part's weights, depth and front-end
settings, so another encoder never reads these outputs (a model that trains
its last blocks caches the input of the first trained block); a clip's key is the
sha256 of its source path and its decoded samples. A chunk holds ``keys``,
``offsets`` and ``frames`` (fp16 ``[total frames, width]``) of a few hundred
clips and is written atomically as soon as it is encoded: an interrupted
build resumes at the first chunk it had not finished. Clips longer than one
30 s segment (speed perturbation can make them so) are left out and counted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgemeta.augment import random_augment
from edgemeta.batching import length_buckets, pad_audio
from edgemeta.corpus import Utterance, cache_root
from edgemeta.model import WHISPER_TINY_EN, SpeechRecognizer
from edgemeta.runtime.atomic_file import atomic_write
from edgemeta.runtime.audio import SAMPLE_RATE

log = logging.getLogger(__name__)
CLEAN = "clean"
# Part of every augmented variant's name: change it whenever variant_audio draws differently, so old outputs are not reused.
AUGMENT_RECIPE = "augment1"
CHUNK_CLIPS = 256


def variant_names(augmented: int) -> tuple[str, ...]:
    """``clean`` and ``augmented`` augmentation variants."""
    return (CLEAN,) + tuple(f"{AUGMENT_RECIPE}-{i}" for i in range(1, augmented + 1))


def clip_key(utterance: Utterance) -> str:
    """A clip's identity: its source (manifest folder and file) and its decoded samples."""
    digest = hashlib.sha256(utterance.source.encode())
    digest.update(np.ascontiguousarray(utterance.audio, dtype=np.float32).tobytes())
    return digest.hexdigest()[:32]


def variant_audio(utterance: Utterance, key: str, variant: str) -> np.ndarray:
    """The clip's audio under ``variant``: itself when clean, else a random augmentation seeded by clip and variant."""
    if variant == CLEAN:
        return utterance.audio
    number = int(variant.rsplit("-", 1)[1])
    return random_augment(utterance.audio, np.random.default_rng([int(key[:15], 16), number]), p=1.0)


def encoder_id(model: SpeechRecognizer) -> str:
    """sha256 of the frozen encoder part's weights and front-end settings: cached outputs belong to exactly that part.

    With ``train_encoder_blocks`` the cache holds the frozen blocks' output
    (the trained blocks' input), so only the frozen part's weights and its
    depth enter the id; without, the whole encoder's.
    """
    if model.config.body != WHISPER_TINY_EN:
        raise ValueError(f"only a {WHISPER_TINY_EN} body has encoder outputs to cache, not {model.config.body}")
    digest = hashlib.sha256(repr(model.whisper.frontend.config).encode())
    trained = model.config.trained_encoder_prefixes
    if trained:
        digest.update(f"frozen blocks {model.config.frozen_encoder_blocks}".encode())
    for name, tensor in model.whisper.encoder.state_dict().items():
        if name.startswith(trained):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass
class CachedClips:
    """Encoder outputs of a list of utterances: ``frames[v][i]`` (fp16 ``[frames, width]``) for ``variants[v]``,
    ``None`` where utterance ``i`` was left out of that variant (longer than one 30 s segment)."""

    utterances: list[Utterance]
    variants: tuple[str, ...]
    frames: list[list[torch.Tensor | None]]

    def frame_count(self, index: int) -> int:
        """Encoder frames of utterance ``index``'s clean outputs."""
        return int(self.frames[0][index].shape[0])

    def batch(self, indices: list[int], variants: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 ``([batch, frames, width], frame lengths)`` of ``indices``, each under its variant (default clean);
        a variant that left a clip out falls back to the clean outputs."""
        chosen = [
            self.frames[v][i] if self.frames[v][i] is not None else self.frames[0][i]
            for i, v in zip(indices, variants or [0] * len(indices))
        ]
        lengths = torch.tensor([c.shape[0] for c in chosen], dtype=torch.long)
        padded = torch.zeros(len(chosen), int(lengths.max()), chosen[0].shape[1])
        for row, frames in enumerate(chosen):
            padded[row, : frames.shape[0]] = frames.float()
        return padded, lengths


def _chunk_keys(folder: Path) -> dict[str, Path]:
    """Key -> chunk file of everything already cached in ``folder`` (npz members load lazily: only ``keys`` is read)."""
    found: dict[str, Path] = {}
    for chunk in sorted(folder.glob("*.npz")):
        try:
            with np.load(chunk, allow_pickle=False) as data:
                found.update(dict.fromkeys(data["keys"].tolist(), chunk))
        except (OSError, ValueError, KeyError) as error:
            log.warning("%s: unreadable cache chunk, encoding its clips again (%s)", chunk, error)
    return found


@torch.no_grad()
def _encode(model: SpeechRecognizer, audios: list[np.ndarray], batch_seconds: float) -> list[np.ndarray]:
    """fp16 encoder outputs of each clip, as it gets them alone: length-sorted padded batches (the encoder masks padding)."""
    lengths = [len(a) for a in audios]
    outputs: list[np.ndarray] = [np.empty(0)] * len(audios)
    for batch in length_buckets(lengths, int(batch_seconds * SAMPLE_RATE), np.random.default_rng(0)):
        waveforms, sample_lengths = pad_audio([audios[i] for i in batch])
        features = model.acoustic_features(waveforms, sample_lengths)
        for row, (index, frames) in enumerate(zip(batch, model.frame_lengths(sample_lengths).tolist())):
            outputs[index] = features[row, :frames].to(torch.float16).numpy()
    return outputs


def _write_chunk(folder: Path, keys: list[str], frames: list[np.ndarray]) -> Path:
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in frames])]).astype(np.int64)
    path = folder / f"{hashlib.sha256(''.join(keys).encode()).hexdigest()[:16]}.npz"
    atomic_write(path, lambda handle: np.savez(handle, keys=np.array(keys), offsets=offsets, frames=np.concatenate(frames)))
    return path


def _read(found: dict[str, Path], wanted: list[str | None]) -> list[torch.Tensor | None]:
    """Frames of each wanted key from its chunk (each chunk file read once)."""
    result: list[torch.Tensor | None] = [None] * len(wanted)
    by_chunk: dict[Path, list[int]] = {}
    for position, key in enumerate(wanted):
        if key is not None:
            by_chunk.setdefault(found[key], []).append(position)
    for chunk, positions in by_chunk.items():
        with np.load(chunk, allow_pickle=False) as data:
            row = {k: i for i, k in enumerate(data["keys"].tolist())}
            offsets, frames = data["offsets"], torch.from_numpy(data["frames"])
        for position in positions:
            i = row[wanted[position]]
            result[position] = frames[offsets[i] : offsets[i + 1]]
    return result


def cached_encoder_outputs(
    model: SpeechRecognizer,
    utterances: list[Utterance],
    augmented_variants: int = 0,
    batch_seconds: float = 60.0,
    progress: bool = True,
    root: Path | None = None,
) -> CachedClips:
    """Encoder outputs of ``utterances`` (clean + ``augmented_variants``), encoding and caching only what is missing."""
    folder = (root or cache_root() / "encoder") / encoder_id(model)
    keys = [clip_key(u) for u in utterances]
    variants = variant_names(augmented_variants)
    max_samples = model.config.max_segment_seconds * SAMPLE_RATE
    was_training = model.training
    model.eval()
    frames = []
    for variant in variants:
        found = _chunk_keys(folder / variant)
        missing = list({keys[i]: i for i in range(len(utterances)) if keys[i] not in found}.values())  # duplicates once
        left_out = 0
        with tqdm(total=len(missing), desc=f"encoding {variant}", unit="clip", disable=not progress or not missing) as bar:
            for start in range(0, len(missing), CHUNK_CLIPS):
                chunk = missing[start : start + CHUNK_CLIPS]
                audios = {i: variant_audio(utterances[i], keys[i], variant) for i in chunk}
                kept = [i for i in chunk if len(audios[i]) <= max_samples]
                left_out += len(chunk) - len(kept)
                if kept:
                    encoded = _encode(model, [audios[i] for i in kept], batch_seconds)
                    chunk_file = _write_chunk(folder / variant, [keys[i] for i in kept], encoded)
                    found.update(dict.fromkeys((keys[i] for i in kept), chunk_file))
                bar.update(len(chunk))
        if left_out:
            log.warning("%s: %d clips longer than %g s left out", variant, left_out, model.config.max_segment_seconds)
        frames.append(_read(found, [k if k in found else None for k in keys]))
    model.train(was_training)
    return CachedClips(utterances, variants, frames)
