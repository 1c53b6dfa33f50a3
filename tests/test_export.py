"""Export: manifest, ONNX interface, parity with base and injected head weights, int8, CLI (the adapted head: test_adaptation_parity)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.func import functional_call

from edgemeta.checkpoint import new_checkpoint
from edgemeta.export import parity
from edgemeta.export.bundle_writer import DEFAULT_SCALAR_RATE, head_rates, head_weights, write_bundle
from edgemeta.model import ModelConfig, SpeechRecognizer, head_parameter_names
from edgemeta.runtime.bundle import load_bundle
from export_fixtures import bundle_dir, exported_model, one_torch_thread, run_export_command  # noqa: F401 (fixtures)
from conftest import REPO, TINY_CONFIG


def test_manifest_describes_model_and_provenance(bundle_dir: Path, exported_model: SpeechRecognizer) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.head_names == head_parameter_names(exported_model)
    shapes = {name: tuple(p.shape) for name, p in exported_model.named_parameters()}
    assert all(p.shape == shapes[p.name] and p.dtype == "float32" for p in bundle.head_parameters)
    assert bundle.feature_size == exported_model.config.feature_size
    assert bundle.model_config == exported_model.config.to_dict()
    assert bundle.inner_steps == 3
    assert bundle.adaptation["method"] == "meta-sgd" and bundle.adaptation["rates"] == "per-parameter"
    assert bundle.training_speakers == ["spk-a", "spk-b"]
    assert set(bundle.manifest["files"]) == {p.name for p in bundle_dir.iterdir()} - {"manifest.json"}
    assert set(bundle.manifest) == {"format_version", "sample_rate", "vocabulary", "model", "body", "max_segment_seconds", "head", "inner_steps",
                                    "adaptation", "streaming", "external_data", "int8", "decoder", "parity", "provenance", "files", "checksum"}
    assert bundle.body == {"name": "cnn-gru", "source": "trained from scratch (this checkpoint)", "sha256": None, "license": None}
    assert bundle.max_segment_seconds is None
    assert all(entry["transcripts_differing"] == 0 for name, entry in bundle.manifest["parity"].items() if "int8" not in name)


def test_parity_rule_is_numpys_isclose() -> None:
    """|diff| <= 1e-4 + 1e-5 * |log-prob|: at -50 a drift of 5.9e-4 passes, at -1 one of 1.2e-4 does not."""
    expected = np.array([-1.0, -50.0])
    for drift, passes in (([0.0, 5.9e-4], True), ([1.2e-4, 0.0], False)):
        got = expected + np.array(drift)
        largest, excess = parity._differences(got, expected)
        report = parity.ParityReport("g", largest, 1, 0, excess)
        reference = bool(np.isclose(got, expected, rtol=parity.RELATIVE_TOLERANCE, atol=parity.TOLERANCE).all())
        assert report.passed() == passes == reference, report


def test_fp32_graphs_share_one_copy_of_the_weights(bundle_dir: Path) -> None:
    graphs = {name: onnx.load(str(bundle_dir / name), load_external_data=False) for name in ("model.onnx", "stream.onnx")}
    external = {name: {t.name: {e.key: e.value for e in t.external_data} for t in g.graph.initializer if t.external_data}
                for name, g in graphs.items()}
    assert all(entry["location"] == "weights.bin" for tensors in external.values() for entry in tensors.values())
    assert external["model.onnx"]["head.output.weight"] == external["stream.onnx"]["head.output.weight"]
    stored = sum(int(e["length"]) for e in external["model.onnx"].values())
    assert (bundle_dir / "weights.bin").stat().st_size < stored * 1.1, "stream.onnx added a second copy of the body"
    for name in graphs:
        onnx.checker.check_model(str(bundle_dir / name), full_check=True)


def test_model_onnx_interface(bundle_dir: Path, exported_model: SpeechRecognizer) -> None:
    session = load_bundle(bundle_dir).session()
    assert [i.name for i in session.get_inputs()] == ["waveform", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["log_probs", "features", "frame_lengths"]
    assert [i.name for i in session.get_overridable_initializers()] == head_parameter_names(exported_model)
    log_probs, features, frames = session.run(None, {"waveform": np.zeros((4, 4321), np.float32), "lengths": np.array([4321, 4000, 160, 1])})
    assert log_probs.shape[:2] == features.shape[:2] and features.shape[2] == exported_model.config.feature_size
    assert frames.tolist() == exported_model.frame_lengths(torch.tensor([4321, 4000, 160, 1])).tolist()


@pytest.mark.parametrize("injected", [False, True], ids=["base-head", "injected-head"])
def test_parity_over_lengths_and_batches(bundle_dir: Path, exported_model: SpeechRecognizer, injected: bool) -> None:
    bundle = load_bundle(bundle_dir)
    clips = parity.synthetic_clips(16000, seconds=(0.2, 0.77, 1.31, 2.05), seed=7)
    weights = parity.perturbed(bundle.head_weights(), seed=3, scale=0.2) if injected else None
    report = parity.compare_model(exported_model, bundle.session(), clips, weights, batch_sizes=(1, 2, 4))
    assert report.passed(), report


def test_injected_weights_change_the_output(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    session, clip = bundle.session(), parity.synthetic_clips(16000, seconds=(1.0,))[0][None]
    feeds = {"waveform": clip, "lengths": np.array([clip.shape[1]])}
    base = session.run(["log_probs"], feeds)[0]
    changed = session.run(["log_probs"], {**feeds, **bundle.head_inputs(parity.perturbed(bundle.head_weights(), scale=0.2))})[0]
    assert np.abs(changed - base).max() > 1e-2
    assert np.array_equal(session.run(["log_probs"], feeds)[0], base)  # feeding is per call: no leftover state


def test_parity_failure_is_reported(bundle_dir: Path) -> None:
    torch.manual_seed(123)
    other = SpeechRecognizer(ModelConfig(**TINY_CONFIG)).eval()
    report = parity.compare_model(other, load_bundle(bundle_dir).session(), parity.synthetic_clips(16000, seconds=(0.5,)))
    with pytest.raises(parity.ParityError, match="model.onnx"):
        parity.require(report)


def test_int8_body_keeps_head_fp32_and_overridable(bundle_dir: Path, exported_model: SpeechRecognizer) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest["int8"]["file"] == "model.int8.onnx"
    session = bundle.session(int8=True)
    assert [i.name for i in session.get_overridable_initializers()] == bundle.head_names
    graph = onnx.load(str(bundle_dir / "model.int8.onnx"))
    assert {n.op_type for n in graph.graph.node} >= {"MatMulInteger", "DequantizeLinear", "GRU"}
    clip = parity.synthetic_clips(16000, seconds=(1.1,))[0][None]
    injected = parity.perturbed(bundle.head_weights(), scale=0.2)
    log_probs, features, _ = session.run(None, {"waveform": clip, "lengths": np.array([clip.shape[1]]), **bundle.head_inputs(injected)})
    # The head after the int8 body is the fp32 head with the injected weights, exactly.
    with torch.no_grad():
        head = functional_call(exported_model.head, {n.removeprefix("head."): w for n, w in injected.items()}, (torch.from_numpy(features),))
    np.testing.assert_allclose(log_probs, head.log_softmax(-1).numpy(), atol=1e-5)
    fp32 = bundle.session().run(["log_probs"], {"waveform": clip, "lengths": np.array([clip.shape[1]])})[0]
    assert np.isfinite(fp32).all() and np.abs(fp32 - session.run(["log_probs"], {"waveform": clip, "lengths": np.array([clip.shape[1]])})[0]).max() < 0.5


def test_rates_of_checkpoints_without_per_parameter_rates(tiny_model: SpeechRecognizer) -> None:
    weights = head_weights(tiny_model)
    rates, adaptation = head_rates(new_checkpoint(tiny_model, "pretrained", 3, []), weights)
    assert adaptation == {"method": "pretrained", "rates": "scalar", "scalar_rate": DEFAULT_SCALAR_RATE, "scalar_rate_source": "default",
                          "update": "sgd", "step_scales": None, "init": None}
    assert all(torch.equal(r, torch.full_like(weights[n], DEFAULT_SCALAR_RATE)) for n, r in rates.items())
    rates, adaptation = head_rates(new_checkpoint(tiny_model, "maml", 3, [], scalar_rate=0.05), weights)
    assert adaptation["scalar_rate"] == 0.05 and all(r.shape == weights[n].shape for n, r in rates.items())
    scalar_per_name = {name: torch.tensor(0.2) for name in weights}  # per-parameter rates given as scalars
    rates, _ = head_rates(new_checkpoint(tiny_model, "meta-sgd", 3, [], rates=scalar_per_name), weights)
    assert all(r.shape == weights[n].shape and float(r.max()) == pytest.approx(0.2) for n, r in rates.items())
    with pytest.raises(ValueError, match="head.output.bias"):
        head_rates(new_checkpoint(tiny_model, "meta-sgd", 3, [], rates={"head.scale": torch.ones(32)}), weights)


def test_export_refuses_to_replace_something_else(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a bundle"):
        write_bundle(tiny_checkpoint, tmp_path / "notes", progress=lambda _: None)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_python_m_export_help() -> None:
    result = subprocess.run([sys.executable, "-m", "edgemeta.export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--no-parity" in result.stdout and "--int8" in result.stdout


def test_cli_reports_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_export_command([str(tmp_path / "nope.pt"), str(tmp_path / "out")]) == 2
    assert "nope.pt" in capsys.readouterr().err
