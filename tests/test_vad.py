"""Voice activity on silero's ONNX model without torch: live endpoints against silero's own wrapper and iterator, segments of long recordings."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from silero_vad import VADIterator, load_silero_vad

from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.vad import THRESHOLD, WINDOW, Endpointer, SileroVAD, speech_segments
from runtime_helpers import runtime_env, speech


def conversation() -> np.ndarray:
    """Silence, speech, a pause, speech, silence: 16 kHz, a whole number of windows."""
    first, second = speech()[:2]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    audio = np.concatenate([gap, first, gap, gap, second, gap, gap]).astype(np.float32)
    return audio[: len(audio) // WINDOW * WINDOW]


def silero_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad(onnx=True)


def test_probabilities_match_silero_onnx_wrapper() -> None:
    audio = conversation()
    ours, theirs = SileroVAD(), silero_model()
    windows = audio.reshape(-1, WINDOW)
    got = np.array([ours(w) for w in windows])
    expected = np.array([theirs(torch.from_numpy(w.copy()), SAMPLE_RATE).item() for w in windows])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.max() > 0.9 and got.min() < 0.1, "speech and silence both present"


def test_endpoints_match_silero_vad_iterator_for_any_chunk_size() -> None:
    audio = conversation()
    iterator = VADIterator(silero_model(), threshold=THRESHOLD, sampling_rate=SAMPLE_RATE, min_silence_duration_ms=250, speech_pad_ms=100)
    expected = []
    for window in audio.reshape(-1, WINDOW):
        event = iterator(torch.from_numpy(window.copy()))
        if event:
            kind = "start" if "start" in event else "end"
            expected.append((kind, int(event[kind])))
    assert [kind for kind, _ in expected] == ["start", "end", "start", "end"]
    for chunk in (WINDOW, 1000, 4096):
        endpointer = Endpointer(silence_seconds=0.25, pad_seconds=0.1)
        events = [e for start in range(0, len(audio), chunk) for e in endpointer.feed(audio[start : start + chunk])]
        assert events == expected, chunk


def test_segments_are_ordered_disjoint_within_the_limit_and_cover_the_speech() -> None:
    audio = conversation()
    loud = np.abs(audio) > 0.02
    for limit in (20.0, 1.5, 0.7):
        segments = speech_segments(audio, max_segment_seconds=limit)
        assert segments and all(0 <= s.start < s.end <= len(audio) for s in segments)
        assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
        assert all(s.end - s.start <= limit * SAMPLE_RATE for s in segments)
        covered = np.zeros(len(audio), dtype=bool)
        for s in segments:
            covered[s.start : s.end] = True
        assert covered[loud].mean() > 0.99, limit
        if limit == 20.0:
            assert len(segments) == 2, "the two sentences, split at the pause between them"
    assert speech_segments(np.zeros(SAMPLE_RATE * 3, dtype=np.float32)) == []


def test_endpointing_and_segmenting_need_no_torch(tmp_path: Path) -> None:
    env = runtime_env(tmp_path, tmp_path / "home", also_block=("torch",))
    code = ("import numpy as np, sys; from edgemeta.runtime.vad import Endpointer, speech_segments; "
            "e = Endpointer(); print(e.feed(np.zeros(16000, np.float32)), speech_segments(np.zeros(48000, np.float32))); "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[] []", done.stderr
