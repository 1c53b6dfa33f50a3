import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from edgemeta.runtime.audio import AudioError, StreamResampler, read_audio, resample


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_matches_torchaudio(rate):
    """soxr HQ equals torchaudio's long Kaiser filter (>90 dB) and its default within its own filter's error."""
    x = sum(tone(rate, 1.0, f) for f in (220, 710, 1330, 3100)) / 4  # speech band, below 3.5 kHz
    ours = resample(x, rate, 16000)
    signal = torch.from_numpy(x).double()
    best = torchaudio.functional.resample(signal, rate, 16000, lowpass_filter_width=64, rolloff=0.945,
                                          resampling_method="sinc_interp_kaiser").float().numpy()
    default = torchaudio.functional.resample(signal, rate, 16000).float().numpy()
    assert abs(len(ours) - len(best)) <= 1
    assert snr_db(best, ours) > 90
    assert snr_db(default, ours) > 30  # torchaudio's default 6-zero-crossing filter is the less exact one


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    n = min(len(reference), len(other))
    middle = slice(200, n - 200)  # the two differ only in how they treat the signal's edges
    error = reference[middle] - other[middle]
    return float(10 * np.log10(np.sum(reference[middle] ** 2) / np.sum(error**2)))


def test_stream_resampler_matches_whole_file():
    x = tone(48000, 1.0, 440)
    whole = resample(x, 48000)
    stream = StreamResampler(48000)
    pieces = [stream(x[i : i + 4800], last=i + 4800 >= len(x)) for i in range(0, len(x), 4800)]
    chunked = np.concatenate(pieces)
    assert abs(len(chunked) - len(whole)) <= 2
    n = min(len(chunked), len(whole))
    assert np.abs(chunked[:n] - whole[:n]).max() < 1e-3


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    stereo = np.stack([tone(8000), tone(8000)], axis=1)
    soundfile.write(tmp_path / "a.flac", stereo, 8000)
    audio = read_audio(tmp_path / "a.flac")
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1


def test_read_audio_ogg(tmp_path):
    soundfile.write(tmp_path / "a.ogg", tone(16000), 16000, format="OGG", subtype="VORBIS")
    assert len(read_audio(tmp_path / "a.ogg")) == 16000


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("empty", "empty"),
    ("nan", "NaN"),
    ("text", "not readable as audio"),
    ("lowrate", "below the 8000 Hz minimum"),
    ("long", "longer than"),
])
def test_bad_audio_names_file_and_problem(tmp_path, case, message):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        soundfile.write(path, np.zeros(0, np.float32), 16000)
    elif case == "nan":
        soundfile.write(path, np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    elif case == "text":
        path.write_text("this is not audio")
    elif case == "lowrate":
        soundfile.write(path, tone(4000), 4000)
    elif case == "long":
        soundfile.write(path, tone(16000, 3.0), 16000)
    with pytest.raises(AudioError, match=message) as info:
        read_audio(path, max_seconds=2.0)
    assert str(path) in str(info.value)


def tone_file(folder, suffix: str, subtype: str, seconds: float = 1.0):
    """A 16 kHz tone written as ``folder/tone.SUFFIX`` in ``subtype``."""
    path = folder / f"tone-{subtype}.{suffix}"
    soundfile.write(path, tone(16000, seconds), 16000, subtype=subtype)
    return path


@pytest.mark.parametrize("suffix, subtype, keep", [
    ("wav", "PCM_16", 60),  # the RIFF header and 8 of its 16000 frames
    ("wav", "PCM_16", 30),  # cut inside the header, before the samples
    ("wav", "FLOAT", -1),  # one byte short of the data chunk's promise
    ("aiff", "PCM_16", 1000),
    ("flac", "PCM_16", 0.5),  # its STREAMINFO promises the frames; decoding fails half-way
    ("ogg", "VORBIS", -50),  # the last page cut: libsndfile logs the missing end-of-stream mark
])
def test_truncated_file_is_named_and_called_truncated(tmp_path, suffix, subtype, keep):
    """libsndfile alone reads a cut WAV as the shorter clip it holds; the header's promise says it was cut."""
    path = tone_file(tmp_path, suffix, subtype, seconds=3.0)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(AudioError, match="truncated") as info:
        read_audio(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix, subtype", [("wav", "PCM_16"), ("wav", "FLOAT"), ("aiff", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")])
def test_whole_files_are_not_called_truncated(tmp_path, suffix, subtype):
    assert len(read_audio(tone_file(tmp_path, suffix, subtype))) == 16000


def test_a_wav_streamed_without_its_length_is_read_to_its_end(tmp_path):
    """Recorders writing to a pipe leave 0xFFFFFFFF as the RIFF and data sizes: unknown, not a promise."""
    path = tone_file(tmp_path, "wav", "PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert len(read_audio(path)) == 16000
