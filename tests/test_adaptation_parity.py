"""Trainer and device adapt one exported checkpoint to the same head.

The trainer's path is :func:`edgemeta.meta_learning.adapt_head` (the
meta-learner's inner loop: PyTorch body, ``torch.func`` head, functional
steps); the device's is :meth:`Adapter.enroll` on the exported bundle
(onnxruntime body, TorchScript head, in-place steps), guard and clip checks
off. Both take S and λ from where they ship: the checkpoint and the bundle.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgemeta.checkpoint import load_checkpoint
from edgemeta.corpus import Utterance
from edgemeta.export import parity
from edgemeta.meta_learning import adapt_head
from edgemeta.runtime.adapter import Adapter
from edgemeta.runtime.bundle import load_bundle
from edgemeta.runtime.text import normalize_text
from export_fixtures import (  # noqa: F401 (fixtures)
    bundle_dir,
    enrolling_bundle_dir,
    enrolling_checkpoint,
    exported_model,
    one_torch_thread,
    whisper_checkpoint,
)
from runtime_helpers import enrollment_clips

# Largest |θ'_trainer − θ'_device| allowed, relative to the largest |θ' − θ|.
# The two bodies (onnxruntime vs PyTorch, both fp32) round differently, so the
# features and each step's gradient differ by float32 noise: measured 1.1e-5 of
# the step. Drift between the paths moves the heads far more (measured: rates
# 10 % off, 0.12; one step fewer, 0.38; a sum instead of a mean over the six
# clips or other frame counts, more). The bound sits two decades from each.
RELATIVE_TOLERANCE = 1e-3


def _same_head(checkpoint_path: Path, bundle_dir: Path) -> dict[str, torch.Tensor]:
    """Adapt by both paths, check the heads agree, and return the device's."""
    clips = enrollment_clips()
    checkpoint = load_checkpoint(checkpoint_path)
    bundle = load_bundle(bundle_dir)
    assert bundle.inner_steps == checkpoint["inner_steps"] > 1

    trainer = adapt_head(checkpoint, [Utterance(c.audio, normalize_text(c.text), "user", c.name) for c in clips])
    device = Adapter(bundle, guard=False, check_clips=False).enroll(clips)
    assert device.adapted and device.steps == bundle.inner_steps, device.decision

    base = bundle.init_weights()
    assert set(trainer) == set(device.weights) == set(base)
    step = max(float((trainer[name] - base[name]).abs().max()) for name in base)
    gap = max(float((trainer[name] - device.weights[name]).abs().max()) for name in base)
    assert step > 0
    assert gap <= RELATIVE_TOLERANCE * step, f"heads differ by {gap:.2e}, the step is {step:.2e}"
    return device.weights


def test_trainer_inner_loop_and_device_enrollment_reach_the_same_head(tiny_checkpoint: Path, bundle_dir: Path, exported_model) -> None:  # noqa: F811
    weights = _same_head(tiny_checkpoint, bundle_dir)
    # The device's adapted head, fed to model.onnx by name, gives the PyTorch model's output with that head.
    report = parity.compare_model(exported_model, load_bundle(bundle_dir).session(), [c.audio for c in enrollment_clips()], weights)
    assert report.passed(), report


def test_normalised_per_step_enrollment_from_an_own_head_is_the_trainers(enrolling_checkpoint: Path, enrolling_bundle_dir: Path) -> None:  # noqa: F811
    """The same agreement with the normalised rule, rates per step and an enrollment head apart from the zero-shot one:
    the trainer starts from the checkpoint's model head, the device from init.safetensors."""
    _same_head(enrolling_checkpoint, enrolling_bundle_dir)
