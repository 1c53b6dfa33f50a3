"""Corpora in memory: manifests read once, decoded audio cached under the user's cache folder.

Decoding thousands of Ogg/WAV files is the slow part of starting a run, so the
16 kHz audio of each manifest is cached as int16 in
``$XDG_CACHE_HOME/edgemeta/audio`` (never beside the manifest: shared corpora
are read-only), keyed by the manifest's clips and their files' sizes and
modification times.

Each utterance keeps its clip's ``language`` (ISO 639-1; ``en`` where the
manifest has none), so a training run can record every language it used
(:func:`corpus_languages`): the bundle's provenance lists them, and an
evaluation of "languages never trained on" picks outside that list.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from edgemeta.runtime.atomic_file import atomic_write
from edgemeta.runtime.audio import AudioError, read_audio
from edgemeta.runtime.manifest import Clip, read_manifest
from edgemeta.runtime.text import normalize_text

log = logging.getLogger(__name__)
MAX_CLIP_SECONDS = 30.0
DEFAULT_LANGUAGE = "en"  # a manifest without a ``language`` key: speechocean762 and the English synthetic corpora


@dataclass
class Utterance:
    """One clip in memory: 16 kHz float32 audio, its normalised transcript and its language (ISO 639-1)."""

    audio: np.ndarray
    text: str
    speaker: str
    source: str
    language: str = DEFAULT_LANGUAGE


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/edgemeta`` (default ``~/.cache/edgemeta``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgemeta"


def _cache_key(clips: list[Clip]) -> str:
    digest = hashlib.sha256()
    for clip in clips:
        stat = clip.audio.stat() if clip.audio.exists() else None
        digest.update(f"{clip.audio}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode(clips: list[Clip], name: str, progress: bool) -> tuple[list[np.ndarray | None], list[str]]:
    audios, problems = [], []
    for clip in tqdm(clips, desc=f"decoding {name}", unit="clip", disable=not progress, leave=False):
        try:
            audios.append(read_audio(clip.audio, max_seconds=MAX_CLIP_SECONDS))
        except AudioError as error:
            audios.append(None)
            problems.append(str(error))
    return audios, problems


def _load_audio(manifest: Path, clips: list[Clip], progress: bool) -> list[np.ndarray | None]:
    cache_file = cache_root() / "audio" / f"{manifest.parent.name}-{_cache_key(clips)}.npz"
    if not cache_file.is_file():
        audios, problems = _decode(clips, manifest.parent.name, progress)
        for problem in problems:
            log.warning("skipping %s", problem)
        sizes = [0 if a is None else len(a) for a in audios]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        kept = [a for a in audios if a is not None]
        samples = (np.clip(np.concatenate(kept), -1, 1) * 32767).astype(np.int16) if kept else np.zeros(0, np.int16)
        atomic_write(cache_file, lambda handle: np.savez(handle, samples=samples, offsets=offsets))
    # Read back even after decoding: the first run gets the same 16-bit samples as every later one.
    with np.load(cache_file, allow_pickle=False) as data:
        samples, offsets = data["samples"], data["offsets"]
    return [None if a == b else samples[a:b].astype(np.float32) / 32767.0 for a, b in zip(offsets[:-1], offsets[1:])]


def load_corpus(
    manifest: str | Path,
    include_speakers: set[str] | None = None,
    exclude_speakers: set[str] | None = None,
    progress: bool = True,
) -> list[Utterance]:
    """Utterances of a manifest, bad clips reported (logged) and skipped, never fatal."""
    manifest = Path(manifest)
    clips = read_manifest(manifest)
    audios = _load_audio(manifest, clips, progress)
    utterances = []
    for clip, audio in zip(clips, audios):
        if audio is None:
            continue
        if include_speakers is not None and clip.speaker not in include_speakers:
            continue
        if exclude_speakers and clip.speaker in exclude_speakers:
            continue
        text = normalize_text(clip.text)
        if not text:
            log.warning("skipping %s: transcript is empty after normalisation", clip.audio)
            continue
        utterances.append(Utterance(audio, text, clip.speaker, str(clip.audio), clip_language(clip)))
    return utterances


def clip_language(clip: Clip) -> str:
    """A manifest clip's ``language`` key, :data:`DEFAULT_LANGUAGE` where it has none."""
    return str(clip.extra.get("language", DEFAULT_LANGUAGE))


def corpus_languages(utterances: Iterable[Utterance]) -> list[str]:
    """Sorted distinct languages of ``utterances``, for a checkpoint's provenance."""
    return sorted({u.language for u in utterances})


def speakers_of(utterances: list[Utterance]) -> list[str]:
    """Sorted distinct speaker ids."""
    return sorted({u.speaker for u in utterances})
