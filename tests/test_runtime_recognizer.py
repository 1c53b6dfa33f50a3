"""Recognizer and live transcription with real onnxruntime sessions on the tiny bundle (no microphone here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.runtime.adapter import HeadTrainer
from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.bundle import Bundle, load_bundle
from edgemeta.runtime.language_model import text_counts
from edgemeta.runtime.live import LiveTranscriber
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.vad import speech_segments
from export_fixtures import bundle_dir  # noqa: F401  (session fixture)
from runtime_helpers import speech, without_streaming


@pytest.fixture(scope="module")
def bundle(bundle_dir) -> Bundle:  # noqa: F811
    return load_bundle(bundle_dir)


def other_head(bundle: Bundle) -> dict[str, torch.Tensor]:
    """Head weights clearly different from the base ones (a stand-in for an adapted head)."""
    generator = torch.Generator().manual_seed(1)
    return {n: w + 0.5 * torch.randn(w.shape, generator=generator) for n, w in bundle.head_weights().items()}


def test_batches_give_what_single_clips_give(bundle: Bundle) -> None:
    audio = speech()[:4]
    recognizer = Recognizer(bundle)
    batched = recognizer.infer(audio)
    for waveform, output in zip(audio, batched):
        (single,) = recognizer.infer([waveform])
        assert output.log_probs.shape == single.log_probs.shape
        np.testing.assert_allclose(output.log_probs, single.log_probs, atol=1e-4)
    assert [t.text for t in recognizer.transcribe(audio)] == [t.text for t in (recognizer.transcribe([a])[0] for a in audio)]


def test_a_users_head_is_fed_to_the_graph(bundle: Bundle) -> None:
    """onnxruntime with injected weights equals the TorchScript head with the same weights on the graph's features."""
    head = other_head(bundle)
    audio = speech()[:2]
    base = Recognizer(bundle).infer(audio)
    adapted = Recognizer(bundle, head).infer(audio)
    trainer = HeadTrainer(bundle)
    trainer.load(head)
    for b, a in zip(base, adapted):
        np.testing.assert_allclose(a.features, b.features, atol=1e-6)  # the body is shared
        with torch.no_grad():
            expected = trainer.log_probs(torch.from_numpy(a.features)[None])[0].numpy()
        np.testing.assert_allclose(a.log_probs, expected, atol=1e-4)
        assert np.abs(a.log_probs - b.log_probs).max() > 0.1


# Counts the process's OS threads around each construction; a fresh process, so no other thread comes or goes meanwhile.
COUNT_WORKER_THREADS = """
import os, sys
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.live import LiveTranscriber
from edgemeta.runtime.recognizer import Recognizer

bundle = load_bundle(sys.argv[1])
for make in (Recognizer, LiveTranscriber):
    for threads in (1, 3):
        before = len(os.listdir("/proc/self/task"))
        made = make(bundle, threads=threads)
        print(make.__name__, threads, len(os.listdir("/proc/self/task")) - before)
        del made
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc (Linux)")
def test_threads_set_how_many_workers_onnxruntime_starts(bundle_dir: Path) -> None:  # noqa: F811
    """``threads=N``: onnxruntime runs the graph on the calling thread and N - 1 workers it starts with the session."""
    counted = subprocess.run([sys.executable, "-c", COUNT_WORKER_THREADS, str(bundle_dir)], capture_output=True, text=True, timeout=120)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.splitlines() == ["Recognizer 1 0", "Recognizer 3 2", "LiveTranscriber 1 0", "LiveTranscriber 3 2"]


def long_recording(pause_seconds: float = 1.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """All test sentences in a row with pauses; returns the audio and where each sentence's speech is (seconds)."""
    silence = np.zeros(int(pause_seconds * SAMPLE_RATE), dtype=np.float32)
    parts, spans, position = [], [], 0
    for clip in speech():
        loud = np.flatnonzero(np.abs(clip) > 0.01)
        offset = position + len(silence)
        spans.append(((offset + loud[0]) / SAMPLE_RATE, (offset + loud[-1]) / SAMPLE_RATE))
        parts += [silence, clip]
        position = offset + len(clip)
    return np.concatenate(parts + [silence]), spans


def test_long_recordings_are_segmented_with_timestamps(bundle: Bundle) -> None:
    audio, spans = long_recording()
    assert len(speech_segments(audio)) == len(spans)
    recognizer = Recognizer(bundle, max_segment_seconds=5.0)
    (transcript,) = recognizer.transcribe([audio])
    assert transcript.duration == pytest.approx(len(audio) / SAMPLE_RATE)
    segments = transcript.segments
    assert len(segments) >= 2
    assert all(s.end - s.start <= 5.0 + 1e-6 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    for segment in segments:  # every segment overlaps a sentence
        assert any(segment.start < end and start < segment.end for start, end in spans)
    assert transcript.text == " ".join(s.text for s in segments if s.text)


def test_unreadable_files_are_reported_in_order(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    results = Recognizer(bundle).transcribe_files([tmp_path / "missing.wav", tmp_path / "noise.wav"])
    assert [type(r).__name__ for r in results] == ["AudioError", "AudioError"]
    assert "missing.wav: no such file" in str(results[0]) and "noise.wav: not readable as audio" in str(results[1])


def stream_in_chunks(live: LiveTranscriber, audio: np.ndarray, chunk: int = 320) -> list:
    return list(live.run(audio[i : i + chunk] for i in range(0, len(audio), chunk)))


@pytest.mark.parametrize("streaming", [True, False])
def test_live_transcripts_follow_the_speech(bundle: Bundle, tmp_path: Path, streaming: bool) -> None:
    """Finals come one per sentence, at its end, equal to decoding that stretch with the same head."""
    source = bundle if streaming else load_bundle(without_streaming(bundle.path, tmp_path))
    head = other_head(bundle)
    audio, spans = long_recording(pause_seconds=1.0)
    live = LiveTranscriber(source, head)
    assert live.streaming is streaming
    events = stream_in_chunks(live, audio)
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == len(spans)
    for final, (start, end) in zip(finals, spans):
        assert start - 0.3 < final.start < start + 0.1 and end - 0.1 < final.end < end + 0.3
    recognizer = Recognizer(bundle, head)
    for final in finals[:2]:
        piece = audio[int(final.start * SAMPLE_RATE) : int(final.end * SAMPLE_RATE)]
        assert final.text == recognizer.transcribe([piece])[0].text
    assert any(e.kind == "partial" for e in events)

    # with a word list (here words the tiny model spells), finals hold only its words
    words = text_counts([e.text for e in finals[:3]])
    listed = [e for e in stream_in_chunks(LiveTranscriber(source, head, words=words), audio) if e.kind == "final"]
    assert [(e.start, e.end) for e in listed] == [(e.start, e.end) for e in finals]
    assert any(e.text for e in listed) and all(set(e.text.split()) <= set(words) for e in listed), [e.text for e in listed]
    assert [e.text for e in listed] != [e.text for e in finals]
