"""Microphone input through PortAudio (``sounddevice``, imported only here and only when used).

Microphones rarely record at the model's rate, so the stream is opened at the
device's own default rate and resampled with the one
:class:`~edgemeta.runtime.audio.StreamResampler`. Input overflows (audio lost
because we read too slowly) are counted and reported, not hidden.
"""

from __future__ import annotations

import queue
from types import ModuleType
from typing import Any, Iterator

import numpy as np

from edgemeta.runtime.audio import SAMPLE_RATE, StreamResampler

BLOCK_SECONDS = 0.02


class MicrophoneError(RuntimeError):
    """No usable microphone: PortAudio missing, no input device, or a device that will not open."""


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as error:  # sounddevice raises OSError when the PortAudio library is missing
        raise MicrophoneError(f"PortAudio is not available ({error}); install it (Debian: apt install libportaudio2)") from None
    except ImportError:
        raise MicrophoneError("the sounddevice package is not installed (pip install sounddevice)") from None
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """Devices that can record: ``index``, ``name``, ``channels``, ``rate`` (default), ``default`` (bool)."""
    sd = _sounddevice()
    default = sd.default.device[0]
    return [
        {
            "index": int(d["index"]),
            "name": str(d["name"]),
            "channels": int(d["max_input_channels"]),
            "rate": int(d["default_samplerate"]),
            "default": int(d["index"]) == default,
        }
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]


def find_device(device: str | int | None) -> dict[str, Any]:
    """The input device named by index, (part of) its name, or ``None`` for the default one."""
    devices = input_devices()
    if not devices:
        raise MicrophoneError("no input device found: connect a microphone (edgemeta-runtime devices lists them)")
    if device is None:
        chosen = [d for d in devices if d["default"]] or devices[:1]
        return chosen[0]
    if isinstance(device, int) or str(device).isdigit():
        chosen = [d for d in devices if d["index"] == int(device)]
    else:
        exact = [d for d in devices if d["name"] == device]
        chosen = exact or [d for d in devices if str(device).lower() in d["name"].lower()]
    names = ", ".join(f"{d['index']}: {d['name']}" for d in devices)
    if not chosen:
        raise MicrophoneError(f"no input device {device!r}; input devices are {names}")
    if len(chosen) > 1:
        raise MicrophoneError(f"input device {device!r} is ambiguous ({', '.join(d['name'] for d in chosen)}); use its index")
    return chosen[0]


class Microphone:
    """A running input stream that yields mono float32 chunks at ``sample_rate`` (use as a context manager)."""

    def __init__(self, device: str | int | None = None, sample_rate: int = SAMPLE_RATE, block_seconds: float = BLOCK_SECONDS) -> None:
        self.device = find_device(device)
        self.device_rate = self.device["rate"]
        self.sample_rate = sample_rate
        self.overflows = 0
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        self._resampler = StreamResampler(self.device_rate, sample_rate)
        sd = _sounddevice()
        options = dict(
            device=self.device["index"],
            samplerate=self.device_rate,
            dtype="float32",
            blocksize=max(int(self.device_rate * block_seconds), 1),
            callback=self._callback,
        )
        try:
            self._stream = sd.InputStream(channels=1, **options)
        except sd.PortAudioError:
            # Some hardware only records in its own channel layout: take it and mix down.
            try:
                self._stream = sd.InputStream(channels=self.device["channels"], **options)
            except sd.PortAudioError as error:
                raise MicrophoneError(f"input device {self.device['name']!r} did not open at {self.device_rate} Hz ({error})") from None

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        self._queue.put(indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy())

    def __enter__(self) -> "Microphone":
        self._stream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop and close the stream."""
        self._stream.stop()
        self._stream.close()

    def read(self, timeout: float | None = None) -> np.ndarray:
        """The next chunk at ``sample_rate`` (possibly empty while the resampler fills); raises ``queue.Empty`` on timeout."""
        return self._resampler(self._queue.get(timeout=timeout))

    def chunks(self, timeout: float = 2.0) -> Iterator[np.ndarray]:
        """Chunks forever; a device that delivers nothing for ``timeout`` seconds raises :class:`MicrophoneError`."""
        while True:
            try:
                yield self.read(timeout)
            except queue.Empty:
                raise MicrophoneError(f"input device {self.device['name']!r} delivered no audio for {timeout:g} s") from None
