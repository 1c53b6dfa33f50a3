"""Audio constants, reading and the one resampler used by files, microphone and trainer."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
MIN_SAMPLE_RATE = 8000
RESAMPLE_QUALITY = "HQ"
READ_BLOCK_FRAMES = 1 << 16

# RIFF (WAV), RIFX (big-endian WAV) and FORM (AIFF): byte order and the chunk holding the samples.
_CONTAINERS = {b"RIFF": ("<", b"data"), b"RIFX": (">", b"data"), b"FORM": (">", b"SSND")}
# Recorders writing to a pipe cannot go back to patch the length: they leave 0 or a 2-4 GiB
# placeholder, and libsndfile reads such a file to its end. Neither means truncated.
_UNKNOWN_CHUNK_SIZE = 0x7FFF0000
# soundfile's frame count when the header states none (a FLAC streamed without a length).
_UNKNOWN_FRAMES = 2**63 - 1


class AudioError(ValueError):
    """A file that cannot be used as speech; the message names the file and the problem."""


def resample(audio: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float audio from ``rate`` to ``target_rate`` (soxr, high quality)."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate == target_rate:
        return audio
    return soxr.resample(audio, rate, target_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


class StreamResampler:
    """Chunk-by-chunk resampling for live input; concatenated output matches :func:`resample`'s filter."""

    def __init__(self, rate: int, target_rate: int = SAMPLE_RATE) -> None:
        self.passthrough = rate == target_rate
        self._stream = None if self.passthrough else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return chunk
        return self._stream.resample_chunk(chunk, last=last)


def check_waveform(audio: np.ndarray, source: str) -> np.ndarray:
    """Raise :class:`AudioError` for empty or non-finite audio; return it as float32."""
    if audio.size == 0:
        raise AudioError(f"{source}: audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{source}: audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


def _promised_size(path: Path) -> int | None:
    """The byte count a WAV or AIFF header promises when the file holds fewer, else ``None`` (also for other formats).

    libsndfile quietly shortens such a file to what is there, so a clip cut off
    in a download or a copy would be read as a shorter (or empty) recording.
    Walks the chunks up to the one holding the samples.
    """
    size = path.stat().st_size
    with path.open("rb") as stream:
        header = stream.read(12)
        order, data_chunk = _CONTAINERS.get(header[:4], (None, None))
        if order is None or len(header) < 12:
            return None
        (container_size,) = struct.unpack(f"{order}I", header[4:8])
        offset = 12  # container id, container size, form type (WAVE, AIFF, AIFC)
        while offset + 8 <= size:
            stream.seek(offset)
            name, chunk_size = struct.unpack(f"{order}4sI", stream.read(8))
            if name == data_chunk and not 0 < chunk_size < _UNKNOWN_CHUNK_SIZE:
                return None
            end = offset + 8 + chunk_size
            if end > size:
                return end
            if name == data_chunk:
                return None
            offset = end + chunk_size % 2  # chunks are padded to an even length
    promised = 8 + container_size  # the samples were never reached: the header itself is cut
    return promised if size < promised < _UNKNOWN_CHUNK_SIZE else None


def _read_frames(handle: soundfile.SoundFile, path: Path) -> np.ndarray:
    """All frames of an open file as float32 [frames, channels]; :class:`AudioError` when fewer than its header promised.

    Read block by block so that the frames decoded before a failure are
    counted: a cut FLAC fails mid-read, and the count says it was cut.
    """
    blocks, error = [], None
    try:
        while True:
            block = handle.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
            blocks.append(block)
            if len(block) < READ_BLOCK_FRAMES:
                break
    except soundfile.LibsndfileError as failure:
        error = failure
    data = np.concatenate(blocks) if blocks else np.zeros((0, handle.channels), np.float32)
    promised = handle.frames
    if promised != _UNKNOWN_FRAMES and len(data) < promised:
        raise AudioError(f"{path}: truncated: its header promises {promised} frames, only {len(data)} were read"
                         + (f" ({error})" if error is not None else ""))
    if "ended unexpectedly" in handle.extra_info:  # libsndfile's log for an Ogg stream cut before its last page
        raise AudioError(f"{path}: truncated: the stream ends before its end-of-stream mark")
    if error is not None:
        raise error
    return data


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Read a file soundfile understands (WAV, FLAC, Ogg, ...) as mono float32 at ``sample_rate``.

    Raises :class:`AudioError` naming the file for a missing, unreadable,
    truncated, empty, non-finite, too-low-rate or (with ``max_seconds``)
    absurdly long recording.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass audio files (e.g. {path}/*.wav)")
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        promised = _promised_size(path)
        if promised is not None:
            raise AudioError(f"{path}: truncated: its header promises {promised} bytes, the file holds {path.stat().st_size}")
        with soundfile.SoundFile(path) as handle:
            rate, frames = handle.samplerate, handle.frames
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioError(f"{path}: {frames / rate:.1f} s is longer than the {max_seconds:g} s allowed")
            data = _read_frames(handle, path)
    except AudioError:
        raise
    except (soundfile.LibsndfileError, OSError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: not readable as audio ({error})") from None
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum")
    audio = check_waveform(data.mean(axis=1), str(path))
    return check_waveform(resample(audio, rate, sample_rate), str(path))


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM WAV."""
    soundfile.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
