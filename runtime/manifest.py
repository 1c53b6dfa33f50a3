"""JSONL manifests (one clip per line: ``audio``, ``text``, ``speaker``) and folders of clips."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


class ManifestError(ValueError):
    """A manifest or folder that cannot be read; the message names the file and the line."""


EXPECTED = "expected a JSONL manifest (.jsonl) or a folder of audio files with same-stem .txt transcripts (clip01.wav + clip01.txt)"


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
    if not path.exists():
        raise ManifestError(f"{path}: no such manifest file or folder ({EXPECTED})")
    if not path.is_file():
        raise ManifestError(f"{path}: not a manifest file ({EXPECTED})")
    if path.suffix.lower() in AUDIO_SUFFIXES:
        raise ManifestError(f"{path}: an audio file, not a manifest; {EXPECTED}")
    clips = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    audio, text = record.pop("audio"), record.pop("text")
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}:{number}: not valid JSON ({error.msg}); {EXPECTED}") from None
                except (KeyError, AttributeError, TypeError):
                    raise ManifestError(f"{path}:{number}: each line needs an object with 'audio' and 'text'") from None
                speaker = str(record.pop("speaker", "unknown"))
                clips.append(Clip((path.parent / audio).resolve(), str(text), speaker, record))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a manifest (not UTF-8 text); {EXPECTED}") from None
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


def scan_folder(folder: str | Path, speaker: str | None = None) -> tuple[list[Clip], list[tuple[str, str]]]:
    """Clips of a folder of audio files with same-stem ``.txt`` transcripts, and the audio files left out with why.

    Raises :class:`ManifestError` for a missing folder, one without audio files,
    or one where no audio file has a transcript.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such folder")
    clips, left_out = [], []
    audio_files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio_files:
        raise ManifestError(f"{folder}: no audio files in this folder ({', '.join(AUDIO_SUFFIXES)}); {EXPECTED}")
    for audio in audio_files:
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            left_out.append((audio.name, f"no {transcript.name} transcript"))
            continue
        try:
            text = transcript.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            left_out.append((audio.name, f"{transcript.name} is not readable UTF-8 text ({error})"))
            continue
        clips.append(Clip(audio.resolve(), text, speaker or folder.name))
    if not clips:
        raise ManifestError(f"{folder}: none of its {len(audio_files)} audio files has a same-stem .txt transcript "
                            f"(e.g. {audio_files[0].name} needs {audio_files[0].with_suffix('.txt').name})")
    return clips, left_out


def scan_clips(source: str | Path) -> tuple[list[Clip], list[tuple[str, str]]]:
    """Clips from a manifest file or a folder, whichever ``source`` is, and a folder's audio files left out with why.

    Raises :class:`ManifestError` for a source that holds no usable clip.
    """
    if Path(source).is_dir():
        return scan_folder(source)
    clips = read_manifest(source)
    if not clips:
        raise ManifestError(f"{source}: no clips in this manifest (one JSON object per line with 'audio' and 'text')")
    return clips, []


def read_clips(source: str | Path) -> list[Clip]:
    """Clips from a manifest file or a folder, whichever ``source`` is (see :func:`scan_clips`)."""
    return scan_clips(source)[0]
