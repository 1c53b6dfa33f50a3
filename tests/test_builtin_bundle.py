"""The shipped bundle: what it was trained on, and that it works and adapts on voices it never heard."""

import json
from pathlib import Path

import pytest

from conftest import REPO, shared_data, skip_or_fail
from edgemeta.runtime.adapter import Adapter, EnrollmentClip
from edgemeta.runtime.audio import read_audio
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, Bundle, load_bundle
from edgemeta.runtime.language_model import read_text_counts
from edgemeta.runtime.manifest import Clip, read_manifest
from edgemeta.runtime.metrics import ErrorCounts
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import normalize_text
from edgemeta.splits import held_out_speakers
from edgemeta.synth import SynthesisError, synthesize_corpus

K = 10  # enrollment clips per flite voice
SCORED = 30  # scored clips per voice, disjoint from its enrollment clips
FLITE_SEED = 8  # which sentences the voices read
# Adaptation must beat the shuffled-transcript control by more than the noise of 60 scored clips, and not
# raise CER. Measured on the whisper-tiny.en bundle with the command below (pooled CER before, own, shuffled,
# decoded): seed 8: 0.2800, 0.2730, 0.3295, 0.2427; seed 7: 0.2523, 0.2505, 0.2845, 0.2050; seed 9: 0.2808,
# 0.2784, 0.3285, 0.2387. Own beats shuffled by 0.034-0.056, so the 0.02 margin holds with room; the cut
# itself is small (0.7-2.5 %: 0.0018-0.0070), so the test uses seed 8, where it is clearest of the three.
#   .venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import test_builtin_bundle as t;
#   print(t.adaptation_on_flite(t.load_bundle(t.BUILTIN_BUNDLE), t.Path('/tmp/flite-8'), 8))"
MIN_GAIN_OVER_SHUFFLED = 0.02


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(BUILTIN_BUNDLE)


def test_trained_without_dev_speakers_or_flite(bundle):
    speakers = set(bundle.training_speakers)
    assert speakers and not speakers & held_out_speakers()
    assert not any(s.startswith("flite") for s in speakers)
    assert "speechocean762" in json.dumps(bundle.provenance["pretraining"]["data"])


def adaptation_on_flite(bundle: Bundle, folder: Path, seed: int) -> dict[str, float]:
    """Pooled CER on SCORED clips of each flite voice (rms, awb; never in training): before and after K-clip enrollment.

    Raw adaptation (no guard, no clip checks), scored best-path on the model
    alone. ``own``: enrolled on the voice's own clips and transcripts;
    ``shuffled``: the same clips and steps, each clip labelled with the next
    clip's transcript (what adaptation gets from the voice alone);
    ``decoded``: no adaptation, the bundle's beam search and language model.
    """
    manifest = synthesize_corpus(folder, speakers=2, clips=K + SCORED, seed=seed, engines=("flite",), conditions=False)
    voices: dict[str, list[Clip]] = {}
    for clip in read_manifest(manifest):
        voices.setdefault(clip.speaker, []).append(clip)
    greedy, adapter = Recognizer(bundle, greedy=True), Adapter(bundle, guard=False, check_clips=False)
    counts = {name: ErrorCounts() for name in ("before", "own", "shuffled", "decoded")}
    for clips in voices.values():
        enrollment, scored = clips[:K], clips[K:]
        audio = [read_audio(c.audio) for c in scored]
        references = [normalize_text(c.text) for c in scored]
        texts = [c.text for c in enrollment]
        heads = {"before": None}
        for name, labels in (("own", texts), ("shuffled", texts[1:] + texts[:1])):
            result = adapter.enroll([EnrollmentClip(c.audio.name, read_audio(c.audio), t) for c, t in zip(enrollment, labels)])
            assert result.adapted, result.decision
            heads[name] = result.weights
        for name, head in heads.items():
            greedy.set_head(head)
            for reference, transcript in zip(references, greedy.transcribe(audio)):
                counts[name].add(reference, transcript.text)
        for reference, transcript in zip(references, Recognizer(bundle).transcribe(audio)):
            counts["decoded"].add(reference, transcript.text)
    return {name: round(c.cer, 4) for name, c in counts.items()}


@pytest.mark.slow
def test_adaptation_lowers_cer_on_voices_never_heard(bundle, tmp_path):
    """Enrollment with the voice's own transcripts beats no adaptation and beats the shuffled-transcript control."""
    try:
        cer = adaptation_on_flite(bundle, tmp_path, FLITE_SEED)
    except SynthesisError as error:
        skip_or_fail(str(error))
    assert cer["before"] < 0.35, cer  # the base model hears these voices (measured 0.280)
    assert cer["own"] < cer["before"], cer
    assert cer["own"] <= cer["shuffled"] - MIN_GAIN_OVER_SHUFFLED, cer
    assert cer["decoded"] < cer["before"], cer  # the language model repairs more than adaptation does


def test_real_held_out_speakers(bundle):
    """Real non-native speech of speakers held out of training: measured CER 0.194 (WER 0.371) on these clips, beam + LM.

    The bound is the accuracy target for held-out real speakers; the previous CNN body measured 0.442 here.
    """
    manifest = shared_data("speechocean762-train")
    held_out = held_out_speakers()
    clips = [c for c in read_manifest(manifest) if c.speaker in held_out][::10]
    counts = ErrorCounts()
    for clip, transcript in zip(clips, Recognizer(bundle).transcribe([read_audio(c.audio) for c in clips])):
        counts.add(normalize_text(clip.text), transcript.text)
    assert len(clips) >= 30 and counts.cer < 0.30, counts


def test_real_8khz_digits_are_resampled_and_transcribed(bundle):
    """Decoded with the digit word list (transcribe --words examples/digits.txt): measured CER 0.400, WER 0.400.

    Empty transcripts score 1.000, and with the previous (CNN) body broken resampling scored 0.908-1.000
    where correct resampling scored 0.692: the bound leaves 0.2 above the measured CER.
    """
    clips = read_manifest(shared_data("fsdd-dev"))[::50]
    recognizer = Recognizer(bundle, words=read_text_counts([REPO / "examples" / "digits.txt"]))
    counts = ErrorCounts()
    for clip, transcript in zip(clips, recognizer.transcribe([read_audio(c.audio) for c in clips])):
        counts.add(normalize_text(clip.text), transcript.text)
    assert len(clips) == 30 and counts.cer < 0.6, counts
