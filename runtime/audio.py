"""Audio constants, reading and the one resampler used by files, microphone and trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
MIN_SAMPLE_RATE = 8000
RESAMPLE_QUALITY = "HQ"


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


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Read a file soundfile understands (WAV, FLAC, Ogg, ...) as mono float32 at ``sample_rate``.

    Raises :class:`AudioError` naming the file for a missing, unreadable, empty,
    non-finite, too-low-rate or (with ``max_seconds``) absurdly long recording.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        with soundfile.SoundFile(path) as handle:
            rate, frames = handle.samplerate, handle.frames
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioError(f"{path}: {frames / rate:.1f} s is longer than the {max_seconds:g} s allowed")
            data = handle.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: not readable as audio ({error})") from None
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum")
    audio = check_waveform(data.mean(axis=1), str(path))
    return check_waveform(resample(audio, rate, sample_rate), str(path))


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM WAV."""
    soundfile.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
