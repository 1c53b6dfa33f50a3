"""The shipped bundle: what it was trained on, and that it works on voices it never heard and adapts to their transcripts."""

import json
import random
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
from edgemeta.synth import SynthesisError, synthesize_corpus, synthesize_language_corpus

K = 10  # enrollment clips per flite voice
SCORED = 30  # scored clips per voice, disjoint from its enrollment clips
FLITE_SEED = 8  # which sentences the voices read
# Measured on the whisper-tiny.en bundle (pretrained with 60 synthetic speakers) with the command below,
# pooled CER before, own, shuffled, decoded: seed 8: 0.0888, 0.0918, 0.1776, 0.0469; seed 7: 0.0991, 0.0982,
# 0.1786, 0.0623; seed 9: 0.1128, 0.1090, 0.1961, 0.0599. The base model already hears these voices well and
# enrollment leaves them level (-3 % to +3 %), while wrong transcripts raise CER by 0.08-0.09: the update
# follows the transcripts. The test uses seed 8, the least favourable of the three for adaptation. Since the
# bundle enrolls from its meta-trained head with 20 normalised steps (2026-12-08), seed 8 measures 0.0888,
# 0.0933, 0.4006, 0.0469: level with its own transcripts, and wrong ones now cost 0.31.
#   .venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import test_builtin_bundle as t;
#   print(t.adaptation_on_flite(t.load_bundle(t.BUILTIN_BUNDLE), t.Path('/tmp/flite-8'), 8))"
MAX_RISE_WITH_OWN_TRANSCRIPTS = 0.01
MIN_GAIN_OVER_SHUFFLED = 0.05
# Enrollment on mismatch (the built-in bundle meta-trained on languages, digits and channels), measured with the
# tests' own functions on this machine: seed 4 cuts pt 0.654 -> 0.472 (-28 %) and pl 0.778 -> 0.552 (-29 %); seeds 5
# and 6 cut 20-27 % per voice. FSDD's three speakers: 0.691 -> 0.284, 0.469 -> 0.321, 0.432 -> 0.161 (mean -52 %).
# The bounds ask for about half of what was measured, and nobody worse.
LANGUAGE_SEED = 4
MIN_LANGUAGE_CUT = 0.15
MIN_DIGITS_CUT = 0.30


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


def enrollment_gain(bundle: Bundle, voices: dict[str, list[Clip]], k: int = K) -> dict[str, tuple[float, float]]:
    """Per speaker, CER of its clips after the first ``k`` before and after enrolling on those ``k``, as the device does
    (clip checks, guard, beam search with the bundle's language model)."""
    recognizer, adapter = Recognizer(bundle), Adapter(bundle)
    cers = {}
    for speaker, clips in voices.items():
        enrollment, scored = clips[:k], clips[k:]
        audio = [read_audio(c.audio) for c in scored]
        result = adapter.enroll([EnrollmentClip(c.audio.name, read_audio(c.audio), c.text) for c in enrollment])
        pair = []
        for head in (None, result.weights if result.adapted else None):
            recognizer.set_head(head)
            counts = ErrorCounts()
            for clip, transcript in zip(scored, recognizer.transcribe(audio)):
                counts.add(normalize_text(clip.text), transcript.text)
            pair.append(round(counts.cer, 4))
        cers[speaker] = (pair[0], pair[1])
    return cers


def by_speaker(clips: list[Clip]) -> dict[str, list[Clip]]:
    voices: dict[str, list[Clip]] = {}
    for clip in clips:
        voices.setdefault(clip.speaker, []).append(clip)
    return voices


@pytest.mark.slow
def test_enrollment_pays_in_languages_never_trained_on(bundle, tmp_path):
    """Ten clips of an espeak-ng voice speaking a test language of splits/languages.json (never meta-trained on, and
    not in the bundle's provenance) cut that voice's CER on ten other clips, as the device enrolls."""
    languages = ["pt", "pl"]
    assert not set(languages) & set(bundle.provenance["languages"])
    try:
        manifest = synthesize_language_corpus(tmp_path, languages, speakers_per_language=1, clips=K + 10, seed=LANGUAGE_SEED,
                                              conditions=False)
    except SynthesisError as error:
        skip_or_fail(str(error))
    cers = enrollment_gain(bundle, by_speaker(read_manifest(manifest)))
    for speaker, (before, after) in cers.items():
        assert after <= before * (1 - MIN_LANGUAGE_CUT), cers


def test_enrollment_pays_on_real_8khz_digits(bundle):
    """Three real FSDD speakers (8 kHz, never trained on): ten clips each cut the CER of their next twenty, nobody worse."""
    # a fixed draw of 30 clips per speaker: the manifest lists each speaker's clips digit by digit
    voices = {speaker: random.Random(0).sample(clips, K + 20) for speaker, clips in by_speaker(read_manifest(shared_data("fsdd-dev"))).items()}
    cers = enrollment_gain(bundle, voices)
    before = sum(b for b, _ in cers.values()) / len(cers)
    after = sum(a for _, a in cers.values()) / len(cers)
    assert len(cers) == 3 and after <= before * (1 - MIN_DIGITS_CUT), cers
    assert all(a <= b + 0.01 for b, a in cers.values()), cers
