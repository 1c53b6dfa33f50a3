"""Exported tiny bundles shared by every export, bundle and runtime test of a session.

``bundle_dir``: a tiny ``cnn-gru`` model (streams); ``whisper_bundle_dir``: a tiny
random ``whisper-tiny.en`` body (takes whole segments, no ``stream.onnx``);
``enrolling_bundle_dir``: the same whisper body with what meta-training on
mismatch writes (normalised steps, rates per step, a zero-shot head apart
from the head enrollment starts from).
Import the fixtures into a test module (``from export_fixtures import bundle_dir, ...``).
pytest would build an imported session fixture once per importing module, so
the export itself is cached here, module-wide.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint, save_checkpoint
from edgemeta.export.command import add_parser
from edgemeta.runtime.language_model import build_char_ngram, text_counts
from edgemeta.model import ModelConfig, SpeechRecognizer

# Random encoder dimensions far below tiny.en's: no package needed, exported in about a second.
WHISPER_TINY_CONFIG = dict(body="whisper-tiny.en", whisper={"width": 64, "heads": 2, "layers": 2}, gru_hidden=32)

_EXPORTED: dict[str, Path] = {}


def run_export_command(argv: list[str]) -> int:
    """``edgemeta export ARGV...`` through the subcommand's own parser (independent of other subcommands)."""
    parser = argparse.ArgumentParser(prog="edgemeta")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def export_once(checkpoint: Path, folder_factory: pytest.TempPathFactory) -> Path:
    """Export ``checkpoint`` with int8, a small language model and an archive through the CLI, the first time only."""
    if "bundle" not in _EXPORTED:
        folder = folder_factory.mktemp("bundle")
        build_char_ngram(text_counts(["hello world", "the cat sat on the mat", "turn on the light"]), source="test words").save(folder / "lm.npz")
        out = folder / "tiny"
        assert run_export_command([str(checkpoint), str(out), "--int8", "--archive", "--lm", str(folder / "lm.npz")]) == 0
        _EXPORTED["bundle"] = out
    return _EXPORTED["bundle"]


@pytest.fixture(scope="session")
def bundle_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported bundle directory (read-only: copy it with :func:`copy_bundle` to change it)."""
    return export_once(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="session")
def bundle_archive(bundle_dir: Path) -> Path:
    """The ``.tar.gz`` written next to the bundle by ``--archive``."""
    return bundle_dir.with_name(bundle_dir.name + ".tar.gz")


@pytest.fixture(scope="session")
def whisper_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random whisper-body model as a Meta-SGD checkpoint; its encoder (positions too) is rounded to
    float16, as whisper's published weights are, so the exporter stores it fp16."""
    torch.manual_seed(0)
    model = SpeechRecognizer(ModelConfig(**WHISPER_TINY_CONFIG)).eval()
    encoder = model.whisper.encoder
    with torch.no_grad():
        encoder.positions.normal_()
        for tensor in encoder.state_dict().values():
            tensor.copy_(tensor.half().float())
    rates = {name: torch.full_like(p, 0.01) for name, p in model.named_parameters() if name.startswith("head.")}
    path = tmp_path_factory.mktemp("whisper-ckpt") / "whisper.pt"
    save_checkpoint(path, new_checkpoint(model, "meta-sgd", 3, ["spk-a"], rates=rates))
    return path


@pytest.fixture(scope="session")
def whisper_bundle_dir(whisper_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whisper-body bundle, exported once through the CLI (``--int8`` asked for: this body is offered none)."""
    if "whisper" not in _EXPORTED:
        out = tmp_path_factory.mktemp("whisper-bundle") / "whisper"
        assert run_export_command([str(whisper_checkpoint), str(out), "--int8"]) == 0
        _EXPORTED["whisper"] = out
    return _EXPORTED["whisper"]


ENROLLING_STEPS = 4


@pytest.fixture(scope="session")
def enrolling_checkpoint(whisper_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``whisper_checkpoint`` as ``edgemeta meta-train --update normalized --per-step-rates --zero-shot-head init`` writes one:
    S = 4 steps with distinct factors per tensor and step, the model's head the enrollment start, the zero-shot head another."""
    checkpoint = load_checkpoint(whisper_checkpoint)
    generator = torch.Generator().manual_seed(1)
    heads = {name: w for name, w in checkpoint["model"].items() if name.startswith("head.")}
    checkpoint.update(
        inner_steps=ENROLLING_STEPS,
        update_rule="normalized",
        rates={name: torch.full_like(w, 0.02) for name, w in heads.items()},
        step_scales={name: torch.linspace(1.5, 0.5, ENROLLING_STEPS) * (1 + i) for i, name in enumerate(heads)},
        zero_shot_head={name: w + 0.05 * torch.randn(w.shape, generator=generator) for name, w in heads.items()},
    )
    path = tmp_path_factory.mktemp("enrolling-ckpt") / "enrolling.pt"
    save_checkpoint(path, checkpoint)
    return path


@pytest.fixture(scope="session")
def enrolling_bundle_dir(enrolling_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The enrolling checkpoint exported once through the CLI."""
    if "enrolling" not in _EXPORTED:
        out = tmp_path_factory.mktemp("enrolling-bundle") / "enrolling"
        assert run_export_command([str(enrolling_checkpoint), str(out)]) == 0
        _EXPORTED["enrolling"] = out
    return _EXPORTED["enrolling"]


@pytest.fixture
def whisper_model(whisper_checkpoint: Path) -> SpeechRecognizer:
    """The PyTorch model the whisper-body bundle was exported from."""
    return model_from_checkpoint(load_checkpoint(whisper_checkpoint)).eval()


@pytest.fixture
def exported_model(tiny_checkpoint: Path) -> SpeechRecognizer:
    """The PyTorch model the bundle was exported from."""
    return model_from_checkpoint(load_checkpoint(tiny_checkpoint)).eval()


def copy_bundle(bundle_dir: Path, folder: Path) -> Path:
    """A private, writable copy of the bundle directory."""
    return Path(shutil.copytree(bundle_dir, folder / bundle_dir.name))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """PyTorch on one thread, as the device runs it; a 2-thread GRU on a busy 2-core machine is many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
