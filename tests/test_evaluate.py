"""``edgemeta eval`` end to end on synthetic speech: a tiny checkpoint and the tiny exported bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, skip_or_fail
from edgemeta.checkpoint import load_checkpoint, save_checkpoint
from edgemeta.cli import main
from edgemeta.meta_learning import transcribe
from edgemeta.corpus import Utterance, load_corpus
from edgemeta.evaluation import adaptation_runs, models
from edgemeta.evaluation.datasets import load_dataset, split_speaker
from edgemeta.runtime.audio import write_audio
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.clip_checks import MISMATCH_NATS_PER_CHAR, alignment_score, transcript_problem
from edgemeta.runtime.ctc_decode import BeamSearch, greedy_decode
from edgemeta.runtime.manifest import Clip, write_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import BLANK_ID, VOCABULARY, encode
from edgemeta.synth import SynthesisError, VoiceSpec, synthesize_many
from export_fixtures import bundle_archive, bundle_dir  # noqa: F401 (session fixtures)

VOICES = {
    "spk-a": VoiceSpec("espeak-ng", "en-us", pitch=50, rate=160, variant="m3"),  # a training speaker of tiny_checkpoint
    "voice-b": VoiceSpec("espeak-ng", "en-gb", pitch=70, rate=140),
}
TEXTS = {
    "spk-a": ["the cat sat", "open the door", "we meet at seven", "a bowl of soup", "turn left here", "good morning"],
    "voice-b": ["she sells shells", "the red bus", "call me later", "it is raining", "bring the book", "stop the clock"],
}
FINETUNE_RATE = 0.05


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two speakers × 6 clips (one text each) and a speaker with a single clip, in a folder named ``synthset``."""
    folder = tmp_path_factory.mktemp("eval") / "synthset"
    clips = []
    for speaker, voice in VOICES.items():
        try:
            audio = synthesize_many(TEXTS[speaker], voice)
        except SynthesisError as error:
            skip_or_fail(str(error))
        for i, (waveform, text) in enumerate(zip(audio, TEXTS[speaker])):
            path = folder / speaker / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, waveform)
            clips.append(Clip(path, text, speaker))
    clips.append(Clip(clips[0].audio, "only one clip", "lonely"))
    write_manifest(folder / "manifest.jsonl", clips)
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def pretrained(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a pretrained checkpoint with a stored fine-tuning rate."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    checkpoint.update(method="pretrained", rates=None, scalar_rate=FINETUNE_RATE)
    path = tmp_path_factory.mktemp("pretrained") / "pretrained.pt"
    save_checkpoint(path, checkpoint)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded-audio caches go to a temporary folder, not the user's ``~/.cache/edgemeta``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_records_protocol_and_reports(manifest: Path, pretrained: Path, tiny_checkpoint: Path, bundle_dir: Path,  # noqa: F811
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    scored: dict[str, list[frozenset[str]]] = defaultdict(list)
    supports: list[frozenset[str]] = []
    speaker_of = {text: speaker for speaker, texts in TEXTS.items() for text in texts}
    original_score, original_adapt_head, original_enroll = adaptation_runs.score, models.adapt_head, models.Adapter.enroll

    def spy_score(references, hypotheses):
        scored[speaker_of[references[0]]].append(frozenset(references))
        return original_score(references, hypotheses)

    def spy_adapt_head(source, support, *args):
        supports.append(frozenset(u.text for u in support))
        return original_adapt_head(source, support, *args)

    def spy_enroll(self, clips):
        supports.append(frozenset(c.text for c in clips))
        return original_enroll(self, clips)

    monkeypatch.setattr(adaptation_runs, "score", spy_score)
    monkeypatch.setattr(models, "adapt_head", spy_adapt_head)
    monkeypatch.setattr(models.Adapter, "enroll", spy_enroll)
    out = tmp_path / "out" / "eval.jsonl"
    code = main(["eval", "--manifest", str(manifest), "--model", f"pretrained={pretrained}", "--model", f"meta-sgd={bundle_dir}",
                 "--model", f"maml={tiny_checkpoint}", "--methods", "none,finetune,maml,meta-sgd,meta-sgd-scalar",
                 "--k", "0,1,2,4", "--seeds", "2", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    records = read_records(out)
    assert all(list(r) == list(adaptation_runs.RECORD_KEYS) for r in records)
    assert {r["dataset"] for r in records} == {"synthset"}
    assert {r["speaker"] for r in records} == {"spk-a", "voice-b"}  # "lonely" has no clip left to adapt on
    keys = [(r["model"], r["method"], r["k"], r["speaker"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys))
    count = defaultdict(int)
    for model, method, k, _, _ in keys:
        count[(model, method)] += 1
    # 2 speakers × 2 seeds; none at k=0 for every model, adaptive methods at k = 0, 1, 2 (3 scored, 3 to adapt on: k=4 skipped)
    assert count == {("pretrained", "none"): 4, ("meta-sgd", "none"): 4, ("maml", "none"): 4,
                     ("pretrained", "finetune"): 12, ("maml", "maml"): 12, ("meta-sgd", "meta-sgd"): 12,
                     ("meta-sgd", "meta-sgd-scalar"): 12}
    by_key = {k: r for k, r in zip(keys, records)}
    for speaker in VOICES:
        assert by_key[("meta-sgd", "meta-sgd", 0, speaker, 1)]["cer"] == by_key[("meta-sgd", "none", 0, speaker, 0)]["cer"]

    # One fixed scored set per speaker, whatever the model, method, k and seed; adaptation clips never among them.
    for speaker in VOICES:
        assert len(set(scored[speaker])) == 1 and len(next(iter(scored[speaker]))) == 3
    all_scored = frozenset().union(*(s[0] for s in scored.values()))
    assert supports and all(not (support & all_scored) for support in supports)
    assert {len(s) for s in supports} == {1, 2}

    summary = json.loads(out.with_suffix(".summary.json").read_text())
    for speaker, facts in summary["datasets"]["synthset"]["speakers"].items():
        assert {TEXTS[speaker][int(Path(n).stem)] for n in facts["scored"]} == next(iter(scored[speaker]))
        assert not set(facts["adaptation"]["0"]) & set(facts["scored"]) and len(facts["adaptation"]["0"]) == 3
    rates = {m["method"]: (m["model"], m["rates"]) for m in summary["methods"]}
    assert rates == {"finetune": ("pretrained", FINETUNE_RATE), "maml": ("maml", None), "meta-sgd": ("meta-sgd", None),
                     "meta-sgd-scalar": ("meta-sgd", FINETUNE_RATE)}

    assert "k=4 skipped for 2 speaker(s)" in captured.err and "speaker lonely skipped" in captured.err
    assert "training speakers: spk-a" in captured.err
    assert "| dataset | model | method | k |" in captured.out
    table = out.with_suffix(".md").read_text()
    assert "| synthset | meta-sgd | meta-sgd-scalar | 2 | 2 |" in table
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_conditions_score_each_speaker_under_its_own_channels_on_the_same_clips(manifest: Path, bundle_dir: Path,  # noqa: F811
                                                                              tmp_path: Path) -> None:
    out, clean_out = tmp_path / "conditions.jsonl", tmp_path / "clean.jsonl"
    common = ["eval", "--manifest", str(manifest), "--model", f"meta-sgd={bundle_dir}", "--k", "0,2", "--seeds", "1"]
    assert main(common + ["--conditions", "2", "--json", str(out)]) == 0
    assert main(common + ["--json", str(clean_out)]) == 0
    records, clean = read_records(out), read_records(clean_out)
    assert {r["dataset"] for r in records} == {"synthset"}  # the manifest's folder name, as DESIGN's records contract says
    assert {r["speaker"] for r in records} == {f"{s}@{n}" for s in VOICES for n in (1, 2)}
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    clean_speakers = json.loads(clean_out.with_suffix(".summary.json").read_text())["datasets"]["synthset"]["speakers"]
    speakers = summary["datasets"]["synthset"]["speakers"]
    assert summary["conditions"] == 2
    for speaker in VOICES:
        for n in (1, 2):
            assert speakers[f"{speaker}@{n}"]["scored"] == [f"{name}#condition-{n}" for name in clean_speakers[speaker]["scored"]]
    # The channel changes what the model hears: not every copy scores as the clean speaker does.
    clean_k0 = {r["speaker"]: r["cer"] for r in clean if r["k"] == 0}
    assert any(r["cer"] != clean_k0[r["speaker"].split("@")[0]] for r in records if r["k"] == 0)


def test_channels_score_each_speaker_through_each_named_channel_on_the_same_clips(manifest: Path, bundle_dir: Path,  # noqa: F811
                                                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, clean_out = tmp_path / "channels.jsonl", tmp_path / "clean.jsonl"
    common = ["eval", "--manifest", str(manifest), "--model", f"meta-sgd={bundle_dir}", "--k", "0", "--seeds", "1"]
    assert main(common + ["--channels", "telephone,noisy", "--json", str(out)]) == 0
    assert main(common + ["--json", str(clean_out)]) == 0
    records, clean = read_records(out), read_records(clean_out)
    assert {r["dataset"] for r in records} == {"synthset"}
    assert {r["speaker"] for r in records} == {f"{s}@{c}" for s in VOICES for c in ("telephone", "noisy")}
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    clean_speakers = json.loads(clean_out.with_suffix(".summary.json").read_text())["datasets"]["synthset"]["speakers"]
    assert summary["channels"] == ["telephone", "noisy"]
    for speaker in VOICES:
        for name in ("telephone", "noisy"):
            scored = summary["datasets"]["synthset"]["speakers"][f"{speaker}@{name}"]["scored"]
            assert scored == [f"{clip}#{name}" for clip in clean_speakers[speaker]["scored"]]
    clean_k0 = {r["speaker"]: r["cer"] for r in clean}
    assert any(r["cer"] != clean_k0[r["speaker"].split("@")[0]] for r in records)
    assert main(common + ["--channels", "codec", "--conditions", "1", "--json", str(out)]) == 1
    assert "give --conditions or --channels, not both" in capsys.readouterr().err


def test_cli_guard_on_a_bundle_archive(manifest: Path, bundle_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "guard.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "edgemeta", "eval", "--manifest", str(manifest), "--model", f"meta-sgd={bundle_archive}",
         "--k", "0,1,2", "--seeds", "1", "--guard", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(read_records(out)) == 2 * (1 + 3)  # speakers × (none + meta-sgd at k = 0, 1, 2)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    adapted_rows = [r for r in summary["rows"] if r["k"] > 0]
    assert adapted_rows and all(r["guard_acceptance"] is not None for r in adapted_rows)
    assert set(summary["guard_rules"]) == {"1", "2"}
    # each enrollment records the steps its head took: the bundle's S when the guard accepted, 0 when it refused
    assert all(e["steps"] == (3 if e["adapted"] else 0) for e in summary["enrollments"]) and summary["enrollments"]
    assert "guard accepted" in out.with_suffix(".md").read_text() and "| synthset | meta-sgd | meta-sgd | 2 |" in done.stdout
    assert "model meta-sgd decodes with beam search and the bundle's language model" in summary["notes"]


def test_greedy_makes_a_bundle_decode_as_checkpoints_do(bundle_dir: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    bundle = models.load_model("meta-sgd", bundle_dir, 1, guard=False, greedy=True)
    assert bundle.recognizer.decode is greedy_decode and bundle.decoding == "best-path"
    assert isinstance(models.load_model("meta-sgd", bundle_dir, 1, guard=False).recognizer.decode, BeamSearch)
    assert models.load_model("maml", tiny_checkpoint, 1, guard=False).decoding == "best-path"


@pytest.mark.parametrize("content, message", [
    (None, "no such manifest file"),
    ('{"audio": "a.wav", "text": "hi", "speaker": "s"}\n{not json\n', "manifest.jsonl:2: not valid JSON"),
    ('{"audio": "missing.wav", "text": "hi", "speaker": "s"}\n', "no speaker with at least 2 readable clips"),
])
def test_bad_manifest_is_a_clear_error(content: str | None, message: str, tiny_checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "data" / "manifest.jsonl"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    code = main(["eval", "--manifest", str(path), "--model", f"meta-sgd={tiny_checkpoint}", "--json", str(tmp_path / "o.jsonl")])
    error = capsys.readouterr().err
    assert code == 1 and message in error and str(path) in error


def test_method_without_its_model_or_rates_and_bad_model_name(manifest: Path, tiny_checkpoint: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "o.jsonl")
    rateless = tmp_path / "rateless.pt"
    save_checkpoint(rateless, {**load_checkpoint(tiny_checkpoint), "rates": None, "scalar_rate": None})
    code = main(["eval", "--manifest", str(manifest), "--model", f"meta-sgd={tiny_checkpoint}", "--methods", "none,reptile", "--json", out])
    assert code == 1 and "method reptile needs --model reptile=PATH" in capsys.readouterr().err
    code = main(["eval", "--manifest", str(manifest), "--model", f"meta-sgd={rateless}", "--methods", "meta-sgd", "--json", out])
    assert code == 1 and "stores neither rates λ nor a scalar rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--manifest", str(manifest), "--model", f"best={tiny_checkpoint}", "--json", out])


def _utterances(speaker: str, count: int) -> list[Utterance]:
    return [Utterance(np.zeros(160, np.float32), f"clip {i}", speaker, f"/data/set/{speaker}/{i}.wav") for i in range(count)]


def test_scored_set_is_fixed_and_adaptation_draws_are_nested() -> None:
    root = Path("/data/set")
    digits = split_speaker("jackson", _utterances("jackson", 500), root)
    assert (len(digits.scored), len(digits.pool)) == (10, 490)
    reading = split_speaker("so762-0001", _utterances("so762-0001", 20), root)
    assert (len(reading.scored), len(reading.pool)) == (10, 10)
    shuffled = split_speaker("so762-0001", _utterances("so762-0001", 20)[::-1], root)
    assert [u.source for u in shuffled.scored] == [u.source for u in reading.scored]
    assert reading.support(0, 5) == reading.support(0, 10)[:5]
    assert [u.source for u in reading.support(0, 5)] != [u.source for u in reading.support(1, 5)]
    assert not {u.source for u in digits.support(2, 20)} & {u.source for u in digits.scored}


def test_cached_scored_features_give_the_full_model_transcripts(manifest: Path, tiny_checkpoint: Path) -> None:
    utterances = [u for u in load_corpus(manifest, progress=False) if u.speaker != "lonely"]
    model = models.CheckpointModel("meta-sgd", tiny_checkpoint)
    adapted = model.adapt(utterances[:3], None).weights
    prepared = model.prepare(utterances[3:])
    for weights in (None, adapted):
        assert model.transcribe(prepared, weights) == transcribe(model.part.model, utterances[3:], weights)


def test_decoder_weights_are_chosen_on_pools_and_measured_on_scored_clips(manifest: Path, bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from edgemeta.benchmarks import decoder_weights

    out = tmp_path / "weights.json"
    result = decoder_weights.main(["--bundle", str(bundle_dir), "--manifest", str(manifest), "--weights", "0,0.5",
                                   "--bonuses", "0,1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved.pop("provenance")["command"] and saved == result  # stamped, then the figures as returned
    assert [(g["lm_weight"], g["char_bonus"]) for g in result["grid"]] == [(0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)]
    assert result["tuning_clips"] == 6 and result["held_out_clips"] == 6
    # the held-out best-path figures are those of the device's best-path transcripts of the speakers' scored clips
    scored = [u for s in load_dataset(manifest, split="dev").speakers for u in s.scored]
    transcripts = Recognizer(load_bundle(bundle_dir), greedy=True).transcribe([u.audio for u in scored])
    errors = score([u.text for u in scored], [t.text for t in transcripts])
    greedy = result["held_out"]["greedy"]
    assert (greedy["cer"], greedy["wer"]) == (round(errors.cer, 4), round(errors.wer, 4)) and errors.cer > 0


def spelled(text: str) -> np.ndarray:
    """``[frames, vocabulary]`` log-probs that spell ``text`` (a blank around every character): best path gives it back."""
    ids = [BLANK_ID] + [i for c in encode(text) for i in (c, BLANK_ID)]
    log_probs = np.full((len(ids), len(VOCABULARY)), np.log(1e-4), np.float32)
    log_probs[np.arange(len(ids)), ids] = np.log(1 - 1e-4 * (len(VOCABULARY) - 1))
    return log_probs


class SpelledRecognizer:
    """A stand-in recognizer for hand-built datasets whose "audio" is already its log-probs (see :func:`spelled`)."""

    def __init__(self, bundle: object) -> None:
        pass

    def infer(self, audio: list[np.ndarray]) -> list[SimpleNamespace]:
        return [SimpleNamespace(log_probs=a) for a in audio]


def hand_built(speakers: dict[str, tuple[list[str], list[str]]]) -> SimpleNamespace:
    """A dataset as ``load_dataset`` returns it: per speaker (pool texts, scored texts), each clip spelled."""
    def clips(texts: list[str]) -> list[SimpleNamespace]:
        return [SimpleNamespace(audio=spelled(t), text=t) for t in texts]
    return SimpleNamespace(name="hand", speakers=[SimpleNamespace(pool=clips(pool), scored=clips(scored)) for pool, scored in speakers.values()])


# What the stand-in beam search makes of each reference, per (weight, bonus); a reference not listed comes out right.
HYPOTHESES = {
    (0.0, 0.0): {"blue sky": "blue skies"},  # 3 edits in 1 word: CER 3/15, WER 1/4 (the lowest WER)
    (0.0, 1.0): {"red cat": "r d cat", "blue sky": "blue s y"},  # 1 + 1 edits splitting 2 words: CER 2/15, WER 4/4
    (0.5, 0.0): {"red cat": "red kat", "blue sky": "blu sky", "go home": "go hom"},  # 1 + 1 edits: CER 2/15, WER 2/4
    (0.5, 1.0): {"red cat": "bed bat", "blue sky": "glue ski"},  # 2 + 2 edits: CER 4/15, WER 4/4
}


class TableSearch:
    """A stand-in beam search: the best path, replaced by what :data:`HYPOTHESES` lists for its weight and bonus."""

    beam = 8

    def __init__(self, lm: object, lm_weight: float = 0.0, char_bonus: float = 0.0, beam: int = 8, prune: object = None, words: object = None) -> None:
        self.lm, self.prune, self.words = lm, prune, words
        self.hypotheses = HYPOTHESES.get((lm_weight, char_bonus), {})

    def __call__(self, log_probs: np.ndarray) -> str:
        reference = greedy_decode(log_probs)
        return self.hypotheses.get(reference, reference)


def test_decoder_weights_choose_the_lowest_pool_cer_then_wer_and_score_held_out_clips(bundle_dir: Path, tmp_path: Path,  # noqa: F811
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand-built: pools "red cat", "blue sky" (15 characters, 4 words), scored "go home" (7, 2).

    The lowest pool CER (2/15) ties between (0, 1) and (0.5, 0); the lower WER chooses (0.5, 0) — not
    (0, 0), the lowest WER, nor (0, 1), the first lowest CER in grid order. On the held-out clip it
    makes "go hom": CER 1/7, WER 1/2; best path decodes it right.
    """
    from edgemeta.benchmarks import decoder_weights

    dataset = hand_built({"a": (["red cat"], ["go home"]), "b": (["blue sky"], [])})
    monkeypatch.setattr(decoder_weights, "load_dataset", lambda manifest, split: dataset if split == "dev" else None)
    monkeypatch.setattr(decoder_weights, "Recognizer", SpelledRecognizer)
    monkeypatch.setattr(decoder_weights, "BeamSearch", TableSearch)
    result = decoder_weights.main(["--bundle", str(bundle_dir), "--manifest", str(tmp_path / "unread.jsonl"), "--weights", "0,0.5", "--bonuses", "0,1"])
    assert [(g["lm_weight"], g["char_bonus"], g["cer"], g["wer"]) for g in result["grid"]] == [
        (0.0, 0.0, 0.2, 0.25), (0.0, 1.0, 0.1333, 1.0), (0.5, 0.0, 0.1333, 0.5), (0.5, 1.0, 0.2667, 1.0)]
    assert result["chosen"] == {"lm_weight": 0.5, "char_bonus": 0.0, "beam": 8}
    assert (result["tuning_clips"], result["held_out_clips"]) == (2, 1)
    assert {name: (r["cer"], r["wer"]) for name, r in result["held_out"].items()} == {"greedy": (0.0, 0.0), "beam_lm": (0.1429, 0.5)}


def test_transcript_check_benchmark_leaves_out_the_right_transcripts_the_device_scores_below_each_threshold(
        manifest: Path, bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Each clip's own transcript scored on the bundle's base head as enrollment scores it; at the device's threshold,
    the share left out is the share of clips enrollment's transcript check refuses."""
    from edgemeta.benchmarks import transcript_check

    rows = transcript_check.main(["--bundle", str(bundle_dir), "--manifest", str(manifest), "--json", str(tmp_path / "check.jsonl")])
    clips = [u for u in load_corpus(manifest, progress=False) if u.speaker != "lonely"]  # one clip: no pool, not a dev speaker
    outputs = Recognizer(load_bundle(bundle_dir)).infer([u.audio for u in clips])
    right = np.array([alignment_score(o.log_probs, encode(u.text)) for u, o in zip(clips, outputs)])
    assert {(r["dataset"], r["clips"]) for r in rows} == {("synthset", 12)}
    assert {r["threshold"]: r["right_left_out"] for r in rows} == {t: round(float(np.mean(right < t)), 3) for t in transcript_check.THRESHOLDS}
    refused = np.mean([transcript_problem(o.log_probs, encode(u.text)) is not None for u, o in zip(clips, outputs)])
    assert {r["threshold"]: r["right_left_out"] for r in rows}[-MISMATCH_NATS_PER_CHAR] == round(float(refused), 3)


# Alignment scores (nats/char) of the hand-built case below: (clip's own text, transcript scored against it).
ALIGNMENT_SCORES = {
    ("one", "one"): -2.5, ("hi", "hi"): -0.8, ("welcome", "welcome"): 0.3, ("four", "four"): -0.2, ("five", "five"): 1.0,
    ("one", "hi"): -4.0, ("welcome", "one"): -1.2, ("four", "five"): -0.6, ("five", "four"): 0.7,
}


def test_transcript_check_pairs_each_clip_with_the_next_clips_text_and_counts_below_each_threshold(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Hand-built: speaker a reads one, hi, welcome (pool, then scored); b reads four, five.

    Wrong transcripts are the next clip's of the same speaker, cyclically: hi for one, one for welcome,
    five for four, four for five; "welcome" (7 characters) cannot fit the 5 frames of "hi" and is not scored.
    Right scores -2.5, -0.8, 0.3, -0.2, 1.0 and wrong -4.0, -1.2, -0.6, 0.7, counted below each threshold.
    """
    from edgemeta.benchmarks import transcript_check

    text_of = {tuple(encode(text)): text for _, text in ALIGNMENT_SCORES}

    def score_from_table(log_probs: np.ndarray, ids: list[int]) -> float:
        return ALIGNMENT_SCORES[(greedy_decode(log_probs), text_of[tuple(ids)])]

    dataset = hand_built({"a": (["one", "hi"], ["welcome"]), "b": (["four"], ["five"])})
    monkeypatch.setattr(transcript_check, "load_dataset", lambda manifest, split: dataset if split == "dev" else None)
    monkeypatch.setattr(transcript_check, "Recognizer", SpelledRecognizer)
    monkeypatch.setattr(transcript_check, "alignment_score", score_from_table)
    monkeypatch.setattr(transcript_check, "THRESHOLDS", (-2.0, -1.0, -0.5, 0.0, 0.5))
    rows = transcript_check.main(["--bundle", str(bundle_dir), "--manifest", str(tmp_path / "unread.jsonl")])
    assert [(r["clips"], r["right_left_out"], r["wrong_caught"]) for r in rows] == [
        (5, 0.2, 0.25), (5, 0.2, 0.5), (5, 0.4, 0.75), (5, 0.6, 0.75), (5, 0.8, 0.75)]


def test_worse_is_measured_against_the_pretrained_models_k0_for_every_method() -> None:
    """meta-sgd's own k=0 (0.46) hides that after 10 clips (0.43) it is still worse than the pretrained model (0.40)."""
    from edgemeta.evaluation.adaptation_runs import Record
    from edgemeta.evaluation.summary import baseline_model, summarize

    cer = {("pretrained", "none", 0): 0.40, ("meta-sgd", "none", 0): 0.46, ("meta-sgd", "meta-sgd", 0): 0.46,
           ("meta-sgd", "meta-sgd", 10): 0.43, ("pretrained", "finetune", 10): 0.405}
    records = [Record("d", model, method, k, "s1", 0, value, 0.5) for (model, method, k), value in cer.items()]
    assert baseline_model(records) == "pretrained"
    rows = {(r.model, r.method, r.k): r.worse for r in summarize(records, [], baseline_model(records))}
    assert rows[("meta-sgd", "meta-sgd", 10)] == 1.0  # 0.43 > 0.40 + 0.01
    assert rows[("pretrained", "finetune", 10)] == 0.0  # 0.405 is within the margin
    own = {(r.model, r.method, r.k): r.worse for r in summarize(records, [], baseline=None)}
    assert own[("meta-sgd", "meta-sgd", 10)] == 0.0  # against its own k=0 it looked better
    assert baseline_model([r for r in records if r.model == "meta-sgd"]) == "meta-sgd"  # no pretrained: the first model


def test_speechocean_is_scored_on_the_test_speakers_unless_dev_is_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemeta.evaluation.datasets import load_dataset
    from edgemeta.splits import dev_speakers, test_speakers

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "speechocean762-train"  # the folder name is what marks the corpus
    speakers = [sorted(dev_speakers())[0], sorted(test_speakers())[0], "so762-trained"]
    clips = []
    for speaker in speakers:
        for i in range(3):
            path = folder / speaker / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, np.full(1600, 0.1 * (i + 1), np.float32))
            clips.append(Clip(path, "a", speaker))
    write_manifest(folder / "manifest.jsonl", clips)
    assert [s.speaker for s in load_dataset(folder / "manifest.jsonl").speakers] == [speakers[1]]
    assert [s.speaker for s in load_dataset(folder / "manifest.jsonl", "dev").speakers] == [speakers[0]]
    with pytest.raises(ValueError, match="split"):
        load_dataset(folder / "manifest.jsonl", "train")
