"""Speaker tasks and episodes, the meta-training loop, its checkpoints, resume and command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import shared_data
from edgemeta.augment import ChannelCondition
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint
from edgemeta.cli import main
from edgemeta.corpus import Utterance
from edgemeta.meta_learning import FINETUNE_GRID, AdaptedPart, encode_episodes, task_loss
from edgemeta.distributed import Ranks
from edgemeta.meta_train import MetaTrainConfig, MetaTrainer, load_tasks, meta_train
from edgemeta.model import SpeechRecognizer
from edgemeta.speaker_tasks import (
    EpisodeSampler, Task, channel_tasks, conditioned_tasks, mismatch_tasks, speaker_condition, speaker_tasks, split_speakers,
    under_channel, under_condition,
)
from edgemeta.splits import dev_speakers, speechocean_split
from edgemeta.splits import test_speakers as reported_speakers  # not test_*: pytest would collect it
from test_meta_learning import single_thread, utterances  # noqa: F401 (single_thread: autouse fixture)


def tasks(prefix: str, speakers: int, clips: int = 6) -> list[Task]:
    return speaker_tasks([u for s in range(speakers) for u in utterances(f"{prefix}{s}", clips, seed=s)], clips)


def tiny_config(out: Path, **overrides) -> MetaTrainConfig:
    settings = dict(out=str(out), k=2, query=2, meta_batch=2, max_steps=4, minutes=60.0, inner_steps=1, inner_rate=0.05, first_order=True, freeze_body=False,
                    val_k=2, val_scored=2, val_every_minutes=60.0, checkpoint_every_minutes=0.0, log_every=1, threads=1)
    return MetaTrainConfig(**{**settings, **overrides})


@pytest.fixture
def init(tiny_model: SpeechRecognizer) -> dict:
    return new_checkpoint(tiny_model, "pretrained", 3, ["pretrain-speaker"])


# --- tasks and episodes ---------------------------------------------------------------------------------------


def test_episodes_are_disjoint_reproducible_and_vary_by_step() -> None:
    def sources(episodes: list) -> list[list[str]]:
        return [[u.source for u in e.support + e.query] for e in episodes]

    sampler = EpisodeSampler(tasks("t", 5), k=2, query=3, seed=7)
    batch = sampler.meta_batch(0, 4)
    assert len({e.task for e in batch}) == 4
    for episode in batch:
        assert len(episode.support) == 2 and len(episode.query) == 3
        assert not {u.source for u in episode.support} & {u.source for u in episode.query}
        assert {u.speaker for u in episode.support + episode.query} == {episode.task}
    assert sources(batch) == sources(EpisodeSampler(tasks("t", 5), k=2, query=3, seed=7).meta_batch(0, 4))
    later = sampler.meta_batch(1, 4)
    assert [[u.source for u in e.support] for e in batch] != [[u.source for u in e.support] for e in later]
    # Validation and the dev rate choice each build their own sampler: the fixed episodes depend on the seed alone,
    # not on what was drawn before (this sampler drew two meta-batches, a new one none).
    fixed = sampler.fixed_episodes()
    assert [e.task for e in fixed] == [t.name for t in sampler.tasks]
    assert sources(fixed) == sources(EpisodeSampler(tasks("t", 5), k=2, query=3, seed=7).fixed_episodes())
    assert sources(fixed) != sources(EpisodeSampler(tasks("t", 5), k=2, query=3, seed=8).fixed_episodes())


def test_conditioned_tasks_put_all_of_a_speakers_clips_under_its_own_condition() -> None:
    clean = tasks("t", 2)
    with_conditions = conditioned_tasks(clean, 2)
    assert [t.name for t in with_conditions] == ["t0", "t1", "t0@1", "t1@1", "t0@2", "t1@2"]
    assert with_conditions[:2] == clean
    originals = {u.source: u.audio for t in clean for u in t.utterances}
    conditioned = with_conditions[2]
    assert all(u.source.endswith("#condition-1") for u in conditioned.utterances)
    assert all(not np.array_equal(u.audio, originals[u.source.removesuffix("#condition-1")]) for u in conditioned.utterances)
    assert speaker_condition("t0", 1) == speaker_condition("t0", 1) != speaker_condition("t0", 2)
    # A clip sounds the same under its condition whichever list it comes in (eval conditions scored and pool apart).
    alone = under_condition(clean[0].utterances[3:4], "t0", 1)[0]
    assert np.array_equal(alone.audio, conditioned.utterances[3].audio)
    assert {speaker_condition(f"s{i}", 1).band_limited for i in range(40)} == {False, True}


def test_speaker_conditions_are_the_draws_earlier_reports_used() -> None:
    # Pinned: speaker@N tasks and evaluations (reports/whisper/dev/conditions-*) were measured on these draws.
    assert speaker_condition("so762-0001", 1) == ChannelCondition(snr_db=None, rt60=0.74, band_limited=False, gain_db=-11.7,
                                                                   noise_kind="pink")


def test_channel_tasks_keep_each_channel_apart_and_reproducible() -> None:
    clean = tasks("t", 2)
    with_channels = channel_tasks(clean, ["telephone", "noisy"])
    assert [t.name for t in with_channels] == ["t0", "t1", "t0@telephone", "t1@telephone", "t0@noisy", "t1@noisy"]
    assert with_channels[:2] == clean
    sources = [u.source for t in with_channels for u in t.utterances]
    assert len(set(sources)) == len(sources)  # clean and channel clips stay apart in caches keyed by source
    assert all(u.source.endswith("#telephone") for u in with_channels[2].utterances)
    originals = {u.source: u.audio for t in clean for u in t.utterances}
    assert all(not np.array_equal(u.audio, originals[u.source.removesuffix("#noisy")]) for u in with_channels[4].utterances)
    again = channel_tasks(clean, ["telephone", "noisy"])
    assert all(np.array_equal(u.audio, v.audio) for t, t2 in zip(with_channels, again) for u, v in zip(t.utterances, t2.utterances))
    # A clip sounds the same through a channel whichever list it comes in (eval puts scored clips and pool apart).
    alone = under_channel(clean[0].utterances[3:4], "noisy")[0]
    assert np.array_equal(alone.audio, with_channels[4].utterances[3].audio)


def test_load_tasks_adds_conditions_and_channels_to_train_and_dev_tasks_without_stacking(monkeypatch: pytest.MonkeyPatch) -> None:
    clips = {"train.jsonl": [u for s in range(2) for u in utterances(f"t{s}", 4, seed=s)], "dev.jsonl": utterances("d0", 4, seed=9)}
    monkeypatch.setattr("edgemeta.meta_train.load_corpus", lambda manifest, **_: clips[manifest])
    config = MetaTrainConfig(manifests=["train.jsonl"], dev_manifests=["dev.jsonl"], speechocean=False, k=2, query=2, val_k=2,
                             val_scored=2, conditions=1, channels=["codec"])
    train, dev, _ = load_tasks(config)
    assert [t.name for t in train] == ["t0", "t1", "t0@1", "t1@1", "t0@codec", "t1@codec"]
    assert [t.name for t in dev] == ["d0", "d0@1", "d0@codec"]
    assert [t.name for t in mismatch_tasks(tasks("t", 1), 0, [])] == ["t0"]


def test_command_line_refuses_impossible_settings_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for flag, value in (("--conditions", "-1"), ("--k", "0")):
        assert main(["meta-train", "--init", str(tmp_path / "init.pt"), "--out", str(tmp_path / "out"), flag, value]) == 2
        assert "edgemeta meta-train: k, query and meta_batch must be >= 1, inner_steps and conditions >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["meta-train", "--init", str(tmp_path / "init.pt"), "--out", str(tmp_path / "out"), "--channels", "telephone,radio"])
    assert "expected channels from 8khz, telephone, codec, far-field, noisy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_too_small_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="fewer than"):
        EpisodeSampler(tasks("t", 2, clips=3), k=2, query=2)


def test_split_holds_out_dev_and_test_speakers() -> None:
    chosen_on, reported_on = sorted(dev_speakers())[:2], sorted(reported_speakers())[:2]
    clips = [Utterance(np.zeros(10, np.float32), "a", s, f"{s}/0") for s in chosen_on + reported_on + ["someone-else"]]
    train, dev = split_speakers(clips)
    assert {u.speaker for u in dev} == set(chosen_on) and {u.speaker for u in train} == {"someone-else"}


def test_committed_split_follows_its_rule() -> None:
    split = speechocean_split()
    speakers = sorted(split["train_speakers"] + split["dev_speakers"] + split["test_speakers"])
    assert len(speakers) == len(set(speakers)) == 125
    assert split["dev_speakers"] == [s for i, s in enumerate(speakers) if i % 16 == 0]
    assert split["test_speakers"] == [s for i, s in enumerate(speakers) if i % 16 == 8]


def test_speechocean_tasks_are_speaker_disjoint() -> None:
    shared_data("speechocean762-train")
    train, dev, _ = load_tasks(MetaTrainConfig(k=5, query=5, val_k=10, val_scored=10))
    assert len(train) == 109 and len(dev) == 8
    assert not {t.name for t in train} & {t.name for t in dev}
    assert {t.name for t in dev} == dev_speakers()
    assert all(len(t.utterances) == 20 for t in train + dev)


# --- the loop -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_order", [False, True])
def test_body_runs_once_per_meta_batch(init: dict, tmp_path: Path, first_order: bool) -> None:
    """Never once per inner step or per task; first order runs the support clips in a second call, without a graph."""
    model = model_from_checkpoint(init)
    calls: list[bool] = []
    body = model.body
    model.body = lambda *args: calls.append(torch.is_grad_enabled()) or body(*args)  # type: ignore[method-assign]
    config = tiny_config(tmp_path, meta_batch=2, inner_steps=2, first_order=first_order)
    MetaTrainer(config, model, tasks("t", 3), [], Ranks()).step(0, 0.0)
    assert calls == ([False, True] if first_order else [True])
    assert model.subsample.weight.grad.abs().sum() > 0  # the body learns through its features


def test_reptile_moves_the_head_toward_the_adapted_heads(init: dict, tmp_path: Path) -> None:
    """θ ← θ + β · mean over tasks of (θ' − θ), θ' from S plain SGD steps on each episode's clips."""
    model = model_from_checkpoint(init)
    config = tiny_config(tmp_path, method="reptile", meta_batch=3, inner_steps=2, reptile_step=0.7)
    trainer = MetaTrainer(config, model, tasks("t", 4), [], Ranks())
    part = AdaptedPart(model)
    before = {n: p.detach().clone() for n, p in part.params().items()}
    adapted_heads = []
    with torch.no_grad():
        batches = encode_episodes(part, trainer.sampler.meta_batch(0, 3))
    for batch in batches:
        params = {n: p.clone().requires_grad_() for n, p in before.items()}
        for _ in range(config.inner_steps):
            grads = torch.autograd.grad(task_loss(part, params, batch.clips), list(params.values()))
            params = {n: (p - config.inner_rate * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
        adapted_heads.append(params)
    stats = trainer.step(0, 0.0)
    assert stats["lr_factor"] == 1.0
    for name, value in part.params().items():
        expected = before[name] + 0.7 * torch.stack([a[name] - before[name] for a in adapted_heads]).mean(0)
        torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=1e-6)
    assert stats["support_after"] < stats["support_before"]


def test_checkpoint_fields_metrics_and_plot(init: dict, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", max_steps=3)
    final = meta_train(config, init, tasks("t", 3), tasks("d", 2), progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    head_names = [n for n in saved["model"] if n.startswith("head.")]
    assert saved["method"] == "meta-sgd" and saved["inner_steps"] == 1 and saved["scalar_rate"] is None
    assert sorted(saved["rates"]) == sorted(head_names)
    assert all(saved["rates"][n].shape == saved["model"][n].shape for n in head_names)
    assert any(not torch.allclose(saved["rates"][n], torch.full_like(saved["rates"][n], config.inner_rate)) for n in head_names), \
        "the saved λ is the learned one, not the inner rate it started from"
    assert saved["training_speakers"] == sorted(["pretrain-speaker", "t0", "t1", "t2"])
    assert saved["state"]["step"] == 3 and final["state"]["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert "dev_cer" in records[-1] and "dev_cer_k0" in records[-1]
    for name in head_names:  # the log's [min, median, max] of λ: the λ the checkpoint holds
        rates = saved["rates"][name]
        assert records[-1]["rates"][name] == pytest.approx([float(rates.min()), float(rates.median()), float(rates.max())], rel=1e-3)
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "best.pt").is_file()


def test_per_step_normalised_meta_sgd_keeps_the_init_head_for_users_who_never_enroll(init: dict, tmp_path: Path) -> None:
    """``--update normalized --per-step-rates --zero-shot-head init``: the checkpoint holds S factors per head tensor that
    meta-training moved, the rule, and the init's head as the zero-shot head while its own head moved on."""
    config = tiny_config(tmp_path / "run", inner_steps=3, update="normalized", per_step_rates=True, zero_shot_head="init",
                         freeze_body=True, inner_rate=0.01, conditions=1, channels=["telephone"])
    final = meta_train(config, init, tasks("t", 3), tasks("d", 2), progress=False)
    head_names = sorted(n for n in final["model"] if n.startswith("head."))
    assert final["update_rule"] == "normalized" and sorted(final["step_scales"]) == head_names == sorted(final["zero_shot_head"])
    assert all(final["step_scales"][n].shape == (3,) for n in head_names)
    assert any(not torch.allclose(final["step_scales"][n], torch.ones(3)) for n in head_names)
    for name in head_names:
        assert torch.equal(final["zero_shot_head"][name], init["model"][name])
    assert any(not torch.equal(final["model"][n], init["model"][n]) for n in head_names)
    conditions = final["provenance"]["channel_conditions"]
    assert conditions["random_per_speaker"] == 1 and conditions["named"] == ["telephone"] and "RT60" in conditions["random_kinds"]
    summary = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["rates"]
    assert len(summary["head.output.weight per step"]) == 3


def test_per_step_rates_need_a_learned_rate() -> None:
    with pytest.raises(ValueError, match="per-step rates are learned by Meta-SGD, not by fomaml"):
        MetaTrainConfig(method="fomaml", per_step_rates=True)


def test_resume_gives_the_uninterrupted_result(init: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, dev = tasks("t", 3), tasks("d", 2)
    uninterrupted = meta_train(tiny_config(tmp_path / "a"), init, train, dev, progress=False)

    original_step = MetaTrainer.step

    def crash_at_step_two(self: MetaTrainer, step: int, elapsed: float) -> dict:
        if step == 2:
            raise KeyboardInterrupt("simulated crash")
        return original_step(self, step, elapsed)

    monkeypatch.setattr(MetaTrainer, "step", crash_at_step_two)
    with pytest.raises(KeyboardInterrupt):
        meta_train(tiny_config(tmp_path / "b"), init, train, dev, progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["state"]["step"] == 2
    monkeypatch.setattr(MetaTrainer, "step", original_step)
    resumed = meta_train(tiny_config(tmp_path / "b"), init, train, dev, progress=False)

    for name, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    for name, value in uninterrupted["rates"].items():
        assert torch.equal(value, resumed["rates"][name]), name
    moments = lambda c: [t for s in c["state"]["trainer"]["optimizer"]["state"].values() for t in s.values()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(moments(uninterrupted), moments(resumed)))
    assert resumed["state"]["step"] == 4


def lowest_cer_rate(rate_grid_cer: dict[str, float]) -> float:
    """The rate of lowest dev CER in a checkpoint's ``rate_grid_cer``, a tie going to the smaller rate."""
    return min((cer, float(rate)) for rate, cer in rate_grid_cer.items())[1]


@pytest.mark.parametrize("method", ["finetune", "ctc-control"])
def test_scalar_rate_baselines_pick_the_grid_rate_of_lowest_dev_cer(init: dict, tmp_path: Path, method: str) -> None:
    """Measured on this tiny model: the lowest CER at the grid's last rate (finetune), a tie of 0.3 and 1 (ctc-control)."""
    checkpoint = meta_train(tiny_config(tmp_path, method=method, max_steps=2), init, tasks("t", 3), tasks("d", 2), progress=False)
    table = checkpoint["provenance"]["rate_grid_cer"]
    assert checkpoint["method"] == "finetune" and checkpoint["rates"] is None
    assert set(table) == {f"{r:g}" for r in FINETUNE_GRID}
    assert checkpoint["scalar_rate"] == lowest_cer_rate(table)
    assert load_checkpoint(tmp_path / "last.pt")["scalar_rate"] == checkpoint["scalar_rate"]


@pytest.mark.parametrize("method", ["fomaml", "maml"])
def test_an_inner_rate_not_given_is_the_fine_tuning_rate_dev_picks_and_the_checkpoint_keeps_it(init: dict, tmp_path: Path, method: str) -> None:
    checkpoint = meta_train(tiny_config(tmp_path / "run", method=method, inner_rate=None, max_steps=1), init, tasks("t", 2), tasks("d", 2),
                            progress=False)
    finetune = meta_train(tiny_config(tmp_path / "finetune", method="finetune"), init, [], tasks("d", 2), progress=False)
    assert checkpoint["method"] == method and checkpoint["rates"] is None
    rate = lowest_cer_rate(finetune["provenance"]["rate_grid_cer"])
    assert checkpoint["scalar_rate"] == checkpoint["state"]["inner_rate"] == checkpoint["provenance"]["config"]["inner_rate"] == rate


def test_frozen_body_caches_features_and_stays_fixed(init: dict, tmp_path: Path) -> None:
    model = model_from_checkpoint(init)
    trainer = MetaTrainer(tiny_config(tmp_path, freeze_body=True), model, tasks("t", 3), [], Ranks())
    body_before = model.subsample.weight.detach().clone()
    head_before = model.head.output.weight.detach().clone()
    for step in range(2):
        trainer.step(step, 0.0)
    assert torch.equal(model.subsample.weight, body_before) and not torch.equal(model.head.output.weight, head_before)
    assert trainer.cache and all(not f.requires_grad for f in trainer.cache.values())


def test_command_line(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines = []
    for speaker in ("a", "b", "c"):
        for i, clip in enumerate(utterances(speaker, 4, seed=ord(speaker))):
            path = tmp_path / "audio" / f"{speaker}{i}.wav"
            path.parent.mkdir(exist_ok=True)
            soundfile.write(path, clip.audio, 16000)
            lines.append(json.dumps({"audio": f"audio/{path.name}", "text": clip.text, "speaker": speaker}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code = main(["meta-train", "--init", str(tiny_checkpoint), "--method", "fomaml", "--out", str(out), "--no-speechocean",
                 "--manifest", str(tmp_path / "manifest.jsonl"), "--steps", "2", "--k", "2", "--query", "2", "--meta-batch", "2",
                 "--inner-rate", "0.02", "--threads", "1"])
    assert code == 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["method"] == "fomaml" and checkpoint["scalar_rate"] == 0.02 and checkpoint["state"]["step"] == 2
    assert {"a", "b", "c"} <= set(checkpoint["training_speakers"])


@pytest.mark.parametrize("method, scope", [("meta-sgd", "head"), ("meta-sgd", "gru+head"), ("meta-sgd", "encoder+gru+head"), ("finetune", "head")])
def test_whisper_body_meta_trains_on_cached_encoder_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, scope: str) -> None:
    """Meta-SGD (every scope) and the fine-tuning rate's selection read the encoder cache: the frozen encoder never runs.
    encoder+gru+head (a model whose last block pretraining trained): that block gets rates and moves, the frozen one neither."""
    from edgemeta.bodies.whisper_body import WhisperBody
    from edgemeta.meta_train import cached_task_outputs
    from test_encoder_cache import tiny_whisper

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny_whisper(train_encoder_blocks=1 if scope == "encoder+gru+head" else 0)
    train_tasks, dev_tasks = tasks("t", 3), tasks("d", 2)
    config = tiny_config(tmp_path / "run", method=method, scope=scope, max_steps=1, freeze_body=True)
    assert len(cached_task_outputs(config, model, train_tasks + dev_tasks, progress=False)) == 30
    monkeypatch.setattr(WhisperBody, "forward", None)  # from here on, running the encoder would fail
    head_before = model.head.output.weight.detach().clone()
    encoder_before = {name: p.detach().clone() for name, p in model.named_parameters() if name.startswith("whisper.")}
    checkpoint = meta_train(config, new_checkpoint(model, "pretrained", 3, ["p"]), train_tasks, dev_tasks, progress=False)
    assert checkpoint["method"] == method and checkpoint["model_config"]["body"] == "whisper-tiny.en"
    assert torch.equal(checkpoint["model"]["head.output.weight"], head_before) == (method == "finetune")
    assert (checkpoint["rates"] is not None) == (method == "meta-sgd")
    moved = {name for name, before in encoder_before.items() if not torch.equal(checkpoint["model"][name], before)}
    trained_block = {name for name in encoder_before if name.startswith(("whisper.encoder.blocks.1.", "whisper.encoder.final_norm."))}
    assert moved == (trained_block if scope == "encoder+gru+head" else set())
    if scope == "encoder+gru+head":
        assert trained_block <= set(checkpoint["rates"]) and not any(name.startswith("whisper.encoder.blocks.0.") for name in checkpoint["rates"])
