"""Tiny end-to-end: synthesize a few clips, train until the training CER is 0, reload, decode."""

import pytest
import torch

from conftest import TINY_CONFIG, skip_or_fail
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.corpus import load_corpus
from edgemeta.train import TrainConfig, corpus_cer, learning_rate, train, transcribe_utterances

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
def test_tiny_model_reaches_zero_training_cer_within_step_bound(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = TrainConfig(manifests=[str(tiny_corpus)], speechocean=False, out=str(tmp_path / "run"), minutes=60,
                         max_steps=STEP_BOUND, lr=3e-3, schedule="constant", warmup_steps=10, augment=False, spec_augment=False,
                         target_train_cer=0.0, threads=1, model=dict(TINY_CONFIG, channels=64, gru_hidden=64))
    last = train(config, progress=False)
    checkpoint = load_checkpoint(last)
    assert checkpoint["state"]["step"] <= STEP_BOUND
    model = model_from_checkpoint(checkpoint)
    utterances = load_corpus(tiny_corpus, progress=False)
    assert corpus_cer(model, utterances) == 0.0
    assert transcribe_utterances(model, utterances) == [u.text for u in utterances]
    assert checkpoint["method"] == "pretrained" and checkpoint["training_speakers"] == [utterances[0].speaker]


def test_schedule_warms_up_then_decays_over_wall_time():
    config = TrainConfig(minutes=10, lr=1e-3, warmup_steps=10)
    assert learning_rate(config, 0, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 100, 0) == pytest.approx(1e-3)
    assert learning_rate(config, 100, 300) == pytest.approx(5e-4)
    assert learning_rate(config, 100, 600) == pytest.approx(0.0, abs=1e-12)
