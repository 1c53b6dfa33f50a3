"""JSONL manifests (one clip per line: ``audio``, ``text``, ``speaker``) and folders of clips."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


class ManifestError(ValueError):
    """A manifest or folder that cannot be read; the message names the file and the line."""


@dataclass
class Clip:
    """One recording and its transcript; ``audio`` is an absolute path."""

    audio: Path
    text: str
    speaker: str = "unknown"
    extra: dict = field(default_factory=dict)


def read_manifest(path: str | Path) -> list[Clip]:
    """Clips of a JSONL manifest; relative ``audio`` paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    clips = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                audio, text = record.pop("audio"), record.pop("text")
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            except (KeyError, AttributeError, TypeError):
                raise ManifestError(f"{path}:{number}: each line needs an object with 'audio' and 'text'") from None
            speaker = str(record.pop("speaker", "unknown"))
            clips.append(Clip((path.parent / audio).resolve(), str(text), speaker, record))
    return clips


def write_manifest(path: str | Path, clips: Iterable[Clip]) -> None:
    """Write clips as JSONL with ``audio`` relative to the manifest's folder where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", encoding="utf-8") as handle:
        for clip in clips:
            audio = Path(clip.audio).resolve()
            shown = audio.relative_to(base) if audio.is_relative_to(base) else audio
            record = {"audio": str(shown), "text": clip.text, "speaker": clip.speaker, **clip.extra}
            handle.write(json.dumps(record) + "\n")


def read_folder(folder: str | Path, speaker: str | None = None) -> list[Clip]:
    """Clips of a folder of audio files with same-stem ``.txt`` transcripts (audio without one is skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such folder")
    clips = []
    for audio in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        transcript = audio.with_suffix(".txt")
        if transcript.is_file():
            clips.append(Clip(audio.resolve(), transcript.read_text(encoding="utf-8").strip(), speaker or folder.name))
    return clips


def read_clips(source: str | Path) -> list[Clip]:
    """Clips from a manifest file or a folder, whichever ``source`` is."""
    return read_folder(source) if Path(source).is_dir() else read_manifest(source)
