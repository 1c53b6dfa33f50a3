"""The shipped bundle: what it was trained on, and that it works on voices it never heard and adapts to their transcripts."""

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
# Measured on the whisper-tiny.en bundle (pretrained with 60 synthetic speakers) with the command below,
# pooled CER before, own, shuffled, decoded: seed 8: 0.0888, 0.0918, 0.1776, 0.0469; seed 7: 0.0991, 0.0982,
# 0.1786, 0.0623; seed 9: 0.1128, 0.1090, 0.1961, 0.0599. The base model already hears these voices well and
# enrollment leaves them level (-3 % to +3 %), while wrong transcripts raise CER by 0.08-0.09: the update
# follows the transcripts. The test uses seed 8, the least favourable of the three for adaptation.
#   .venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import test_builtin_bundle as t;
#   print(t.adaptation_on_flite(t.load_bundle(t.BUILTIN_BUNDLE), t.Path('/tmp/flite-8'), 8))"
MAX_RISE_WITH_OWN_TRANSCRIPTS = 0.01
MIN_GAIN_OVER_SHUFFLED = 0.05


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
def test_enrollment_on_voices_never_heard_follows_their_transcripts(bundle, tmp_path):
    """Unseen voices are heard (the issue's flite target, CER <= 0.15); enrolling on their own transcripts keeps
    CER level, and clearly below enrolling on the same clips with shuffled transcripts."""
    try:
        cer = adaptation_on_flite(bundle, tmp_path, FLITE_SEED)
    except SynthesisError as error:
        skip_or_fail(str(error))
    assert cer["before"] <= 0.15, cer
    assert cer["own"] <= cer["before"] + MAX_RISE_WITH_OWN_TRANSCRIPTS, cer
    assert cer["own"] <= cer["shuffled"] - MIN_GAIN_OVER_SHUFFLED, cer
    assert cer["decoded"] < cer["before"], cer  # the language model repairs what adaptation does not


def test_real_held_out_speakers(bundle):
    """Real non-native speech of speakers held out of training: measured CER 0.200 (WER 0.366) on these clips, beam + LM.

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
    """Decoded with the digit word list (transcribe --words examples/digits.txt): measured CER 0.175, WER 0.200.

    Empty transcripts score 1.000, and with the previous (CNN) body broken resampling scored 0.908-1.000
    where correct resampling scored 0.692; the bound 0.4 lies between the measured CER and those.
    """
    clips = read_manifest(shared_data("fsdd-dev"))[::50]
    recognizer = Recognizer(bundle, words=read_text_counts([REPO / "examples" / "digits.txt"]))
    counts = ErrorCounts()
    for clip, transcript in zip(clips, recognizer.transcribe([read_audio(c.audio) for c in clips])):
        counts.add(normalize_text(clip.text), transcript.text)
    assert len(clips) == 30 and counts.cer < 0.4, counts
