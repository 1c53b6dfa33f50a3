"""The device-side reader: verification, archives, parts, and the runtime's import rule."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.export.bundle_writer import write_archive
from edgemeta.runtime import bundle_format
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, BundleError, load_bundle, manifest_checksum
from edgemeta.runtime.bundle_format import FORMAT_VERSION, MANIFEST
from edgemeta.runtime.cli import main as runtime_main
from export_fixtures import (  # noqa: F401 (fixtures)
    bundle_archive,
    bundle_dir,
    copy_bundle,
    enrolling_bundle_dir,
    enrolling_checkpoint,
    one_torch_thread,
    whisper_checkpoint,
)
from conftest import REPO


def bundle_files(bundle_dir: Path) -> list[str]:
    return sorted(p.name for p in bundle_dir.iterdir())


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the bundle's manifest and write it back with a matching checksum (as an exporter would)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    manifest["checksum"] = manifest_checksum(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_parts_match_the_checkpoint(bundle_dir: Path, tiny_checkpoint: Path) -> None:
    bundle = load_bundle(bundle_dir)
    checkpoint = load_checkpoint(tiny_checkpoint)
    model = model_from_checkpoint(checkpoint)
    weights, rates = bundle.head_weights(), bundle.rates()
    assert list(weights) == bundle.head_names == list(rates)
    for name in bundle.head_names:
        assert torch.equal(weights[name], model.state_dict()[name])
        assert torch.equal(rates[name], checkpoint["rates"][name])
    assert bundle.sample_rate == 16000 and bundle.vocabulary[0] == "<blank>"
    head = bundle.load_head()
    assert [name for name, _ in head.named_parameters()] == bundle.head_names
    features = torch.randn(2, 7, bundle.feature_size)
    torch.testing.assert_close(head(features), model.head(features), rtol=0, atol=0)
    assert len(bundle.digest) == 64 and bundle.manifest["checksum"] == manifest_checksum(bundle.manifest)
    assert all(path.stat().st_mode & 0o444 == 0o444 for path in [bundle_dir, *bundle_dir.iterdir()]), "a bundle is world-readable"


@pytest.mark.parametrize(
    "name", ["manifest.json", "model.onnx", "stream.onnx", "weights.bin", "model.int8.onnx", "head.pt", "head.safetensors", "rates.safetensors", "lm.npz"]
)
def test_a_changed_byte_is_caught_and_names_the_file(bundle_dir: Path, tmp_path: Path, name: str) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    data = bytearray((copy / name).read_bytes())
    if name == "manifest.json":  # a changed value that still parses: only the checksum can tell
        data = bytearray(bytes(data).replace(b'"inner_steps": 3', b'"inner_steps": 4'))
    else:
        data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["manifest.json", "model.onnx", "head.pt", "rates.safetensors"])
def test_a_missing_file_is_caught_and_named(bundle_dir: Path, tmp_path: Path, name: str) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    (copy / name).unlink()
    with pytest.raises(BundleError, match=f"{name.replace('.', '[.]')} is missing"):
        load_bundle(copy)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1"])
def test_unknown_format_version_is_refused(bundle_dir: Path, tmp_path: Path, version: Any) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    edit_manifest(copy, lambda manifest: manifest.update(format_version=version))
    with pytest.raises(BundleError, match=rf"manifest\.json has format_version {version!r}; this runtime reads format_version 1 to"):
        load_bundle(copy)


def test_the_committed_builtin_bundle_loads_and_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    """A format change must keep reading the shipped bundle (an upgrade step in bundle_format.UPGRADES), never strand it."""
    assert runtime_main(["verify"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"ok: {BUILTIN_BUNDLE}")


def test_an_older_format_version_is_upgraded_after_its_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the format moves on, a bundle of the previous version loads through its upgrade step; its digest stays."""
    current = load_bundle(BUILTIN_BUNDLE)
    seen = []

    def upgrade(manifest: dict[str, Any]) -> dict[str, Any]:
        seen.append(manifest["format_version"])
        return {**manifest, "format_version": FORMAT_VERSION + 1, "upgraded": True}

    monkeypatch.setattr("edgemeta.runtime.bundle.FORMAT_VERSION", FORMAT_VERSION + 1)
    monkeypatch.setitem(bundle_format.UPGRADES, FORMAT_VERSION, upgrade)
    upgraded = load_bundle(BUILTIN_BUNDLE)
    assert seen == [current.manifest["format_version"]] == [FORMAT_VERSION]
    assert upgraded.manifest["upgraded"] and upgraded.digest == current.digest


@pytest.mark.parametrize("key, value, message", [
    ("sample_rate", 8000, r"expects 8000 Hz audio; this runtime serves 16000 Hz models only"),
    ("vocabulary", ["<blank>", " ", *"abcdefghijklmnopqrstuvwxyz", "'", "-"], r"vocabulary .* is not this runtime's"),
])
def test_a_model_the_runtime_cannot_serve_is_refused_naming_the_bundle(bundle_dir: Path, tmp_path: Path, key: str, value: Any, message: str) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    edit_manifest(copy, lambda manifest: manifest.update({key: value}))
    with pytest.raises(BundleError, match=f"^{copy}: .*{message}"):
        load_bundle(copy)


def test_a_required_file_must_be_listed(bundle_dir: Path, tmp_path: Path) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    edit_manifest(copy, lambda manifest: manifest["files"].pop("head.pt"))
    with pytest.raises(BundleError, match=r"does not list head\.pt"):
        load_bundle(copy)


def test_files_are_checked_again_when_loaded(bundle_dir: Path, tmp_path: Path) -> None:
    copy = copy_bundle(bundle_dir, tmp_path)
    bundle = load_bundle(copy)
    data = bytearray((copy / "head.pt").read_bytes())
    data[100] ^= 0xFF
    (copy / "head.pt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head\.pt is corrupt"):
        bundle.load_head()
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        bundle.session()


def test_archive_round_trip(bundle_dir: Path, bundle_archive: Path, tmp_path: Path) -> None:
    plain = load_bundle(bundle_dir)
    for archive in (bundle_archive, write_archive(bundle_dir, tmp_path / "tiny.tar")):
        with tarfile.open(archive) as tar:
            assert sorted(Path(n).name for n in tar.getnames() if "/" in n) == bundle_files(bundle_dir)
        packed = load_bundle(archive)
        assert packed.digest == plain.digest and packed.source == archive
        for name, weight in plain.head_weights().items():
            assert torch.equal(packed.head_weights()[name], weight)
        clip = np.random.default_rng(0).normal(0, 0.1, (1, 3200)).astype(np.float32)
        feeds = {"waveform": clip, "lengths": np.array([3200])}
        np.testing.assert_array_equal(packed.session().run(None, feeds)[0], plain.session().run(None, feeds)[0])
        unpacked = packed.path
        del packed
        gc.collect()
        assert not unpacked.exists(), "the temporary copy of an archive outlived its Bundle"


def test_corrupt_archives_are_refused(bundle_dir: Path, bundle_archive: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(bundle_archive.read_bytes()[:2000])
    with pytest.raises(BundleError, match="broken.tar.gz"):
        load_bundle(broken)
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path / "model.zip")


def test_int8_session_and_streaming_state(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.has_int8 and bundle.session(int8=True) is not None
    stream = bundle.stream_session()
    state = bundle.initial_stream_state(batch=3)
    assert [i.name for i in stream.get_inputs()] == ["chunk", *state]
    assert [o.name for o in stream.get_outputs()][2:] == ["new_" + name for name in state]
    assert all(value.shape[0] == 3 and not value.any() for value in state.values())
    with pytest.raises(KeyError, match="head.nope"):
        bundle.head_inputs({"head.nope": torch.zeros(1)})


def test_builtin_bundle_path() -> None:
    assert BUILTIN_BUNDLE == REPO / "runtime" / "builtin"


def test_reader_needs_no_trainer_onnx_or_torchaudio(bundle_archive: Path) -> None:
    """Load, verify, run and step a bundle with onnx, torchaudio and every trainer module unimportable."""
    script = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "torchaudio", "onnxscript") or (
            name.startswith("edgemeta.") and not name.startswith("edgemeta.runtime")
        ):
            raise ImportError("forbidden on the device: " + name)
sys.meta_path.insert(0, Refuse())
import numpy as np, torch
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.update_rule import sgd_update_
bundle = load_bundle({str(bundle_archive)!r})
_, features, _ = bundle.session().run(None, {{"waveform": np.zeros((1, 3200), np.float32), "lengths": np.array([3200])}})
head = bundle.load_head()
params = dict(head.named_parameters())
loss = head(torch.from_numpy(features)).logsumexp(-1).mean()
sgd_update_(params, dict(zip(params, torch.autograd.grad(loss, list(params.values())))), bundle.rates())
bundle.stream_session().run(None, {{"chunk": np.zeros((1, 640), np.float32), **bundle.initial_stream_state(), **bundle.head_inputs(params)}})
print("ok", sorted(m for m in sys.modules if m.startswith("edgemeta")))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_a_bundle_that_enrolls_from_its_own_head_keeps_the_zero_shot_head_in_the_graph(enrolling_bundle_dir: Path, enrolling_checkpoint: Path) -> None:  # noqa: F811
    """The zero-shot head is what the graph, head.safetensors and head.pt hold (users who never enrolled);
    init.safetensors the meta-trained head enrollment starts from; the rates come per step, λ times each step's factor."""
    checkpoint = load_checkpoint(enrolling_checkpoint)
    bundle = load_bundle(enrolling_bundle_dir)
    assert bundle.update_rule == "normalized" and bundle.has_init_head and bundle.inner_steps == 4
    for name, weight in bundle.head_weights().items():
        torch.testing.assert_close(weight, checkpoint["zero_shot_head"][name], rtol=0, atol=0)
        torch.testing.assert_close(bundle.init_weights()[name], checkpoint["model"][name], rtol=0, atol=0)
    steps = bundle.step_rates()
    assert len(steps) == 4
    for step, rates in enumerate(steps):
        for name, rate in rates.items():
            torch.testing.assert_close(rate, checkpoint["rates"][name] * float(checkpoint["step_scales"][name][step]))
    model = model_from_checkpoint(checkpoint).eval()
    model.load_state_dict(checkpoint["zero_shot_head"], strict=False)
    audio = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32) * 0.1
    graph = bundle.session().run(None, {"waveform": audio, "lengths": np.array([8000])})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(audio), torch.tensor([8000])).numpy()
    np.testing.assert_allclose(graph, expected, atol=1e-3)


def test_a_format_1_bundle_steps_plain_sgd_from_its_base_head(bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Bundles written before format 2 (the built-in one among them, until rebuilt) load with the rule they were trained for."""
    copy = copy_bundle(bundle_dir, tmp_path)

    def as_version_1(manifest: dict[str, Any]) -> None:
        for key in ("update", "step_scales", "init"):
            del manifest["adaptation"][key]
        manifest["format_version"] = 1

    edit_manifest(copy, as_version_1)
    old = load_bundle(copy)
    assert old.manifest["format_version"] == FORMAT_VERSION == 2
    assert old.update_rule == "sgd" and not old.has_init_head
    for name, rate in old.step_rates().items():
        torch.testing.assert_close(rate, old.rates()[name], rtol=0, atol=0)
        torch.testing.assert_close(old.init_weights()[name], old.head_weights()[name], rtol=0, atol=0)


def test_step_factors_must_cover_every_head_tensor_and_step(enrolling_bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = copy_bundle(enrolling_bundle_dir, tmp_path)
    edit_manifest(copy, lambda manifest: manifest["adaptation"]["step_scales"]["head.scale"].pop())
    with pytest.raises(BundleError, match=r"step_scales need 4 factors for each of \['head.scale'"):
        load_bundle(copy).step_rates()


def test_an_unknown_update_rule_is_refused(bundle_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = copy_bundle(bundle_dir, tmp_path)
    edit_manifest(copy, lambda manifest: manifest["adaptation"].update(update="adam"))
    with pytest.raises(BundleError, match=r"update rule 'adam'; this runtime knows sgd, normalized"):
        load_bundle(copy)
