"""Tiny end-to-end: synthesize a few clips, train until the training CER is all but 0, reload, decode."""

import json

import pytest

from conftest import TINY_CONFIG, skip_or_fail
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import load_corpus
from edgemeta.train import TrainConfig, corpus_cer, learning_rate, train

# Training CER 0 is not a bound every machine meets: float kernels differ between CPUs (AVX2, AVX-512)
# and send training down different paths, and on many paths this causal model never places a clip's
# final letter ("yellow" loses its w), which it can only emit in the silent tail after the audio, where
# its frames look alike. Measured with the test's clips and settings, model seeds 0-7 x
# ATEN_CPU_CAPABILITY=avx512 / avx2 / default (MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA held to the
# same ISA), 1000 steps: CER 0 in 9 of the 24 runs; the others stayed at 1 or 2 final letters (0.016,
# 0.032). So the run stops at 3 wrong characters of the 62 (both final letters and one more), which
# every run reached by step 150-400: the step bound is 3.75 times the slowest. (Measured by running
# this test's train() call with seed=0..7 under those variables and target_train_cer=0.0.)
MAX_TRAINING_CER = 0.05
STEP_BOUND = 1500


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    synth = pytest.importorskip("edgemeta.synth")
    try:
        synth.require_engine("espeak-ng")
    except synth.SynthesisError as error:
        skip_or_fail(str(error))
    out = tmp_path_factory.mktemp("corpus")
    return synth.synthesize_corpus(out, speakers=1, clips=2, seed=3, engines=("espeak-ng",), conditions=False, workers=1)


@pytest.mark.slow
def test_tiny_model_reaches_near_zero_training_cer_within_step_bound(tiny_corpus, tmp_path, monkeypatch):
    """The run ends at the target, well inside the step bound, and the reloaded checkpoint decodes as training measured.

    One thread, a constant rate and a step budget (the clock never ends it): the run depends on the CPU's
    kernels only, not on its load or thread count.
    """
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = TrainConfig(manifests=[str(tiny_corpus)], speechocean=False, out=str(tmp_path / "run"), minutes=24 * 60,
                         max_steps=STEP_BOUND, lr=3e-3, schedule="constant", warmup_steps=10, augment=False, spec_augment=False,
                         target_train_cer=MAX_TRAINING_CER, threads=1, seed=0, model=dict(TINY_CONFIG, channels=64, gru_hidden=64))
    last = train(config, progress=False)
    checkpoint = load_checkpoint(last)
    step = checkpoint["state"]["step"]
    assert step <= STEP_BOUND
    measured = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r["dev_cer"] for r in measured if "dev_cer" in r and r["step"] == step]
    utterances = load_corpus(tiny_corpus, progress=False)
    cer = corpus_cer(model_from_checkpoint(checkpoint), utterances)
    assert cer <= MAX_TRAINING_CER and final == [round(cer, 4)], (cer, final)
    assert checkpoint["method"] == "pretrained" and checkpoint["training_speakers"] == [utterances[0].speaker]


def test_schedule_warms_up_then_decays_over_wall_time():
    config = TrainConfig(minutes=10, lr=1e-3, warmup_steps=10)
    assert learning_rate(config, 0, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 100, 0) == pytest.approx(1e-3)
    assert learning_rate(config, 100, 300) == pytest.approx(5e-4)
    assert learning_rate(config, 100, 600) == pytest.approx(0.0, abs=1e-12)


def tiny_whisper_manifest(folder):
    """Four noise clips with one-word transcripts (a tiny random whisper encoder learns them by heart)."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    lines = []
    for i, text in enumerate(["red", "green", "blue", "yellow"]):
        soundfile.write(folder / f"{i}.wav", (0.1 * rng.standard_normal(8000 + 1600 * i)).astype(np.float32), 16000)
        lines.append(json.dumps({"audio": f"{i}.wav", "text": text, "speaker": "s"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def test_whisper_body_pretrains_on_cached_encoder_outputs(tmp_path, monkeypatch):
    """A tiny random whisper encoder (no weights package): the cache is built once and its training loss falls."""
    import torch

    from edgemeta import encoder_cache, train as train_module
    from edgemeta.model import SpeechRecognizer
    from test_encoder_cache import TINY_WHISPER

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(train_module, "new_model", SpeechRecognizer)  # random weights, not the packaged tiny.en
    config = TrainConfig(manifests=[str(tiny_whisper_manifest(tmp_path))], speechocean=False, out=str(tmp_path / "run"), max_steps=100,
                         lr=3e-3, schedule="constant", warmup_steps=10, spec_augment=True, cache_variants=1, threads=1, seed=0,
                         model=TINY_WHISPER)
    torch.manual_seed(0)
    last = train(config, progress=False)
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    # Measured 3.22 -> 2.11 over steps 20-100 (noise clips, masked, two variants): bound with a margin at 0.8x.
    assert len(losses) == 5 and losses[-1] < 0.8 * losses[0], losses
    chunks = sorted(p.parent.name for p in (tmp_path / "cache" / "edgemeta" / "encoder").rglob("*.npz"))
    assert chunks == ["augment1-1", "clean"]
    monkeypatch.setattr(encoder_cache, "_encode", None)  # a resumed run reads the cache, never the encoder
    train(TrainConfig(**{**config.__dict__, "max_steps": 101}), progress=False)
    assert load_checkpoint(last)["state"]["step"] == 101 and load_checkpoint(last)["model_config"]["body"] == "whisper-tiny.en"


def test_whisper_body_trains_its_last_block_at_a_scaled_rate(tmp_path, monkeypatch):
    """train_encoder_blocks=1: the cache holds the first block's output, the last block moves, the first does not."""
    import torch

    from edgemeta import train as train_module
    from edgemeta.checkpoint import model_from_checkpoint
    from edgemeta.encoder_cache import encoder_id
    from edgemeta.model import ModelConfig, SpeechRecognizer
    from test_encoder_cache import TINY_WHISPER

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(train_module, "new_model", SpeechRecognizer)
    model_config = {**TINY_WHISPER, "train_encoder_blocks": 1}
    config = TrainConfig(manifests=[str(tiny_whisper_manifest(tmp_path))], speechocean=False, out=str(tmp_path / "run"), max_steps=20,
                         lr=3e-3, schedule="constant", warmup_steps=1, cache_variants=0, threads=1, seed=0, model=model_config)
    torch.manual_seed(0)
    start = SpeechRecognizer(ModelConfig(**model_config)).state_dict()
    torch.manual_seed(0)
    trained = model_from_checkpoint(load_checkpoint(train(config, progress=False))).state_dict()
    moved = {name for name in start if not torch.equal(start[name], trained[name])}
    assert any(name.startswith("whisper.encoder.blocks.1.") for name in moved)
    assert not any(name.startswith(("whisper.encoder.blocks.0.", "whisper.encoder.conv")) for name in moved)
    torch.manual_seed(0)
    initial = SpeechRecognizer(ModelConfig(**model_config))
    assert [p.name for p in (tmp_path / "cache" / "edgemeta" / "encoder").iterdir()] == [encoder_id(initial)]
    groups = train_module.parameter_groups(initial, config)
    assert [g["lr_scale"] for g in groups] == [1.0, config.encoder_lr_scale] and groups[1]["weight_decay"] == 0.0
