"""Channel effects for 16 kHz mono speech: noise, reverberation, band limit, telephone, codec, gain, speed.

Every function takes a 1-D float waveform as a numpy array or a torch tensor
and returns the same kind; randomness comes only from the
``numpy.random.Generator`` passed in, so a seed reproduces the audio exactly.
:data:`CHANNELS` names fixed conditions a user's clips may come through.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from edgemeta.runtime.audio import SAMPLE_RATE, resample

Waveform = TypeVar("Waveform", np.ndarray, torch.Tensor)

NOISE_KINDS = ("white", "pink", "babble")
CLIP_PEAK = 0.99
BABBLE_TALKERS = 6
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU_LAW_LEVELS = 256


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    return x


def _like(result: np.ndarray, original: Waveform) -> Waveform:
    result = np.ascontiguousarray(result, dtype=np.float32)
    return torch.from_numpy(result) if isinstance(original, torch.Tensor) else result


def peak_normalize(x: Waveform, peak: float = 0.9) -> Waveform:
    """Scale so the largest absolute sample is ``peak`` (silence is returned unchanged)."""
    audio = _to_numpy(x)
    largest = float(np.abs(audio).max(initial=0.0))
    return _like(audio * (peak / largest) if largest > 0 else audio, x)


def _limit_clipping(audio: np.ndarray) -> np.ndarray:
    largest = float(np.abs(audio).max(initial=0.0))
    return audio * (CLIP_PEAK / largest) if largest > CLIP_PEAK else audio


def _shaped_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f**exponent (0: white, 1: pink)."""
    spectrum = rng.standard_normal(length // 2 + 1) + 1j * rng.standard_normal(length // 2 + 1)
    frequencies = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    frequencies[0] = frequencies[1] if length > 1 else 1.0
    return np.fft.irfft(spectrum / frequencies ** (exponent / 2), n=length)


def _babble(length: int, rng: np.random.Generator) -> np.ndarray:
    """Several 'talkers': speech-band noise switched on and off at syllable rate (3-6 Hz)."""
    frequencies = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    speech_band = np.exp(-0.5 * (np.log(np.maximum(frequencies, 1.0) / 500.0) / 0.9) ** 2)
    times = np.arange(length) / SAMPLE_RATE
    mixture = np.zeros(length)
    for _ in range(BABBLE_TALKERS):
        spectrum = rng.standard_normal(length // 2 + 1) + 1j * rng.standard_normal(length // 2 + 1)
        voice = np.fft.irfft(spectrum * speech_band, n=length)
        syllables = np.sin(2 * np.pi * rng.uniform(3.0, 6.0) * times + rng.uniform(0, 2 * np.pi))
        mixture += voice * np.maximum(syllables, 0.0)
    return mixture


def make_noise(length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Noise of ``kind`` (white, pink or babble) with unit mean power."""
    if kind == "white":
        noise = rng.standard_normal(length)
    elif kind == "pink":
        noise = _shaped_noise(length, 1.0, rng)
    elif kind == "babble":
        noise = _babble(length, rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    power = float(np.mean(noise**2))
    return (noise / np.sqrt(power) if power > 0 else noise).astype(np.float32)


def add_noise(x: Waveform, snr_db: float, rng: np.random.Generator, kind: str = "pink") -> Waveform:
    """Add ``kind`` noise so that signal power / noise power is ``snr_db`` decibels."""
    audio = _to_numpy(x)
    noise = torch.from_numpy(make_noise(audio.size, kind, rng))
    noisy = AF.add_noise(torch.from_numpy(audio), noise, torch.tensor(float(snr_db)))
    return _like(noisy.numpy(), x)


def room_impulse_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic RIR: a direct path, then exponentially decaying noise reaching -60 dB after ``rt60`` s."""
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    length = int(rt60 * SAMPLE_RATE)
    pre_delay = int(rng.uniform(0.002, 0.010) * SAMPLE_RATE)
    tail_times = np.arange(length - pre_delay) / SAMPLE_RATE
    tail = rng.standard_normal(tail_times.size) * np.exp(-3.0 * np.log(10.0) * tail_times / rt60)
    response = np.zeros(length)
    response[0] = 1.0
    # Direct-to-reverberant energy of a talker a metre or two from the microphone: the tail carries about as much energy.
    response[pre_delay:] = tail * rng.uniform(0.5, 1.5) / np.sqrt(np.sum(tail**2))
    return response.astype(np.float32)


def reverberate(x: Waveform, rt60: float, rng: np.random.Generator) -> Waveform:
    """Convolve with a synthetic room response of reverberation time ``rt60`` s; same length and peak as the input."""
    audio = _to_numpy(x)
    response = torch.from_numpy(room_impulse_response(rt60, rng))
    wet = AF.fftconvolve(torch.from_numpy(audio), response)[: audio.size].numpy()
    peak, wet_peak = float(np.abs(audio).max(initial=0.0)), float(np.abs(wet).max(initial=0.0))
    return _like(wet * (peak / wet_peak) if wet_peak > 0 else wet, x)


def _back_to_16k(narrow: np.ndarray, rate: int, length: int) -> np.ndarray:
    """``narrow`` (sampled at ``rate`` Hz) resampled to 16 kHz, cut or zero-padded to ``length`` samples."""
    wide = resample(narrow, rate, SAMPLE_RATE)
    restored = np.zeros(length, dtype=np.float32)
    restored[: min(length, wide.size)] = wide[:length]
    return restored


def band_limit(x: Waveform, rate: int = 8000) -> Waveform:
    """Telephone-like channel: down to ``rate`` Hz and back to 16 kHz with the runtime's resampler."""
    audio = _to_numpy(x)
    return _like(_back_to_16k(resample(audio, SAMPLE_RATE, rate), rate, audio.size), x)


def mu_law(x: Waveform) -> Waveform:
    """8-bit μ-law companding (G.711-like): samples clipped to [-1, 1], then quantised to 256 logarithmic levels."""
    audio = torch.from_numpy(np.clip(_to_numpy(x), -1.0, 1.0))
    levels = AF.mu_law_encoding(audio, MU_LAW_LEVELS)
    return _like(AF.mu_law_decoding(levels, MU_LAW_LEVELS).numpy(), x)


def telephone(x: Waveform) -> Waveform:
    """A G.711-like telephone line: 8 kHz sampling, a gentle 300–3400 Hz band-pass, 8-bit μ-law; back at 16 kHz."""
    audio = _to_numpy(x)
    narrow = torch.from_numpy(resample(audio, SAMPLE_RATE, TELEPHONE_RATE))
    low, high = TELEPHONE_BAND_HZ
    passed = AF.lowpass_biquad(AF.highpass_biquad(narrow, TELEPHONE_RATE, low), TELEPHONE_RATE, high)
    return _like(_back_to_16k(mu_law(passed.numpy()), TELEPHONE_RATE, audio.size), x)


@dataclass(frozen=True)
class Codec:
    """A lossy format libsndfile (inside soundfile's wheels) writes and reads in memory."""

    format: str
    subtype: str
    compression_level: float


# Opus's bitrate follows libsndfile's compression level: 0.99 is about 9 kbit/s on speech (libsndfile 1.2.2).
CODECS = {"opus": Codec("OGG", "OPUS", 0.99)}


def codec_round_trip(x: Waveform, codec: str) -> Waveform:
    """Encode with ``codec`` (a :data:`CODECS` name) and decode again, in memory; same length (libsndfile trims Opus's pre-skip)."""
    spec, encoded = CODECS[codec], io.BytesIO()
    sf.write(encoded, _to_numpy(x), SAMPLE_RATE, format=spec.format, subtype=spec.subtype, compression_level=spec.compression_level)
    encoded.seek(0)
    decoded, _ = sf.read(encoded, dtype="float32")
    return _like(decoded, x)


def gain(x: Waveform, db: float) -> Waveform:
    """Multiply by ``db`` decibels."""
    return _like(_to_numpy(x) * np.float32(10.0 ** (db / 20.0)), x)


def speed_perturb(x: Waveform, factor: float) -> Waveform:
    """Play ``factor`` times faster (tempo and pitch, as Kaldi's speed perturbation); length / ``factor``."""
    ratio = Fraction(factor).limit_denominator(20)
    if factor <= 0 or abs(float(ratio) - factor) > 1e-9:
        raise ValueError(f"speed factor {factor} is not a positive ratio of small integers (e.g. 0.9, 1.0, 1.1)")
    audio = _to_numpy(x)
    if ratio == 1:
        return _like(audio, x)
    faster = AF.resample(torch.from_numpy(audio), ratio.numerator, ratio.denominator)
    return _like(faster.numpy(), x)


# What ChannelCondition.sample draws, in words (for provenance records): keep in step with it.
RANDOM_CONDITION_KINDS = "noise 5-30 dB (white, pink, babble), room RT60 0.15-0.8 s, 8 kHz band limit, gain -15 to +3 dB"


@dataclass(frozen=True)
class ChannelCondition:
    """A recording condition: room, noise, channel (bandwidth, telephone line, codec) and level (``None``/``False`` leaves an effect out)."""

    snr_db: float | None = None
    rt60: float | None = None
    band_limited: bool = False
    gain_db: float = 0.0
    noise_kind: str = "pink"
    telephone: bool = False
    codec: str | None = None

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "ChannelCondition":
        """A random condition; about one in six is clean apart from its gain."""
        return cls(
            snr_db=round(float(rng.uniform(5.0, 30.0)), 1) if rng.random() < 0.6 else None,
            rt60=round(float(rng.uniform(0.15, 0.8)), 2) if rng.random() < 0.5 else None,
            band_limited=bool(rng.random() < 0.25),
            gain_db=round(float(rng.uniform(-15.0, 3.0)), 1),
            noise_kind=NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))],
        )

    def apply(self, x: Waveform, rng: np.random.Generator) -> Waveform:
        """Reverberation, noise, band limit, telephone line, codec, then gain; scaled down if it would clip."""
        audio = _to_numpy(x)
        if self.rt60 is not None:
            audio = reverberate(audio, self.rt60, rng)
        if self.snr_db is not None:
            audio = add_noise(audio, self.snr_db, rng, self.noise_kind)
        if self.band_limited:
            audio = band_limit(audio)
        if self.telephone:
            audio = telephone(audio)
        if self.codec is not None:
            audio = codec_round_trip(audio, self.codec)
        return _like(_limit_clipping(gain(audio, self.gain_db)), x)


# Fixed channels a user's clips may come through, strong enough to cost a pretrained model CER (measured:
# reports/whisper/dev/channels-*).
CHANNELS = {
    "8khz": ChannelCondition(band_limited=True),
    "telephone": ChannelCondition(telephone=True),
    "codec": ChannelCondition(codec="opus"),
    "far-field": ChannelCondition(rt60=0.7, snr_db=20.0, noise_kind="pink"),
    "noisy": ChannelCondition(snr_db=5.0, noise_kind="babble"),
}


def channel(name: str) -> ChannelCondition:
    """The named channel of :data:`CHANNELS`; ``ValueError`` naming the choices for any other name."""
    if name not in CHANNELS:
        raise ValueError(f"unknown channel {name!r}; choose from {', '.join(CHANNELS)}")
    return CHANNELS[name]


def channel_list(value: str) -> list[str]:
    """Command-line value type: ``"telephone,codec"`` -> ``["telephone", "codec"]``, each a :data:`CHANNELS` name."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [name for name in names if name not in CHANNELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected channels from {', '.join(CHANNELS)}, comma-separated; got {value!r}")
    return names


def random_augment(
    x: Waveform, rng: np.random.Generator, p: float = 0.5, speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
) -> Waveform:
    """Training-time augmentation: a speed drawn from ``speeds``, then with probability ``p`` a random channel."""
    audio = speed_perturb(_to_numpy(x), float(speeds[int(rng.integers(len(speeds)))]))
    if rng.random() < p:
        audio = ChannelCondition.sample(rng).apply(audio, rng)
    return _like(_limit_clipping(audio), x)
