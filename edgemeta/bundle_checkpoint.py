"""``edgemeta checkpoint-from-bundle BUNDLE OUT``: rebuild a trainer checkpoint from an exported bundle.

A bundle of a ``whisper-tiny.en`` body holds every weight of its model,
though not as a checkpoint: the encoder is the packaged pretrained one (the
manifest's ``body.sha256`` names it), the GRU's weights sit in ``model.onnx``
under the exporter's generated names (``onnx::GRU_787``) in ONNX's layout, and
the head's weights and rates are safetensors. :func:`checkpoint_from_bundle`
puts them back into a :class:`~edgemeta.model.SpeechRecognizer` and checks the
result against the bundle's own onnxruntime session before returning, so a
bundle whose training checkpoints are lost (the built-in one) can be
meta-trained further with ``edgemeta meta-train --init``.

Bodies whose weights the bundle alone holds in graph form (``cnn-gru``, a
whisper encoder with trained blocks or not the packaged one) are refused:
only the GRU and the head are read back from the graph.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

from edgemeta.bodies.whisper_weights import PACKAGED_MODEL_SHA256, PACKAGED_REQUIREMENT, WeightsError
from edgemeta.checkpoint import new_checkpoint, save_checkpoint
from edgemeta.export import parity
from edgemeta.export.bundle_writer import torch_threads
from edgemeta.model import WHISPER_TINY_EN, ModelConfig, SpeechRecognizer, new_model
from edgemeta.runtime.bundle import Bundle, BundleError, load_bundle
from edgemeta.runtime.bundle_format import HEAD_PREFIX, MODEL_FILE

RECIPE = "from-bundle"
CHECK_SECONDS = 1.5  # the synthetic clip the rebuilt model is checked on
# ONNX stacks a GRU's gates z, r, h; PyTorch r, z, n: the rows of PyTorch's gate i are ONNX's gate ONNX_GATE[i].
ONNX_GATE = (1, 0, 2)
DIRECTION_SUFFIXES = ("", "_reverse")


class BundleCheckpointError(ValueError):
    """A bundle that cannot be turned back into a checkpoint; the message names the bundle and the reason."""


def _initializer(bundle: Bundle, graph: onnx.GraphProto, name: str, read: Callable[[str], bytes]) -> np.ndarray:
    """The float32 value of graph tensor ``name``: an initializer, possibly behind ``Cast`` / ``Identity`` nodes.

    Initializers stored as external data come from ``read`` (the bundle's sha256-checked files by name).
    """
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    while name not in initializers:
        node = producers.get(name)
        if node is None or node.op_type not in ("Cast", "Identity"):
            found = "a graph input" if node is None else f"a {node.op_type} node"
            raise BundleCheckpointError(f"{bundle.source}: {MODEL_FILE}: {name!r} is {found}, not a stored weight")
        name = node.input[0]
    tensor = initializers[name]
    if tensor.data_location == TensorProto.EXTERNAL:
        where = {entry.key: entry.value for entry in tensor.external_data}
        offset, length = int(where.get("offset", 0)), int(where["length"])
        inline = TensorProto()
        inline.CopyFrom(tensor)
        inline.ClearField("external_data")
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = read(where["location"])[offset : offset + length]
        tensor = inline
    return numpy_helper.to_array(tensor).astype(np.float32)


def _pytorch_gates(onnx_gates: np.ndarray) -> torch.Tensor:
    """Rows stacked z, r, h (ONNX) -> r, z, n (PyTorch), along the first axis."""
    return torch.from_numpy(np.concatenate([np.split(onnx_gates, 3)[gate] for gate in ONNX_GATE]))


def read_gru(bundle: Bundle) -> dict[str, torch.Tensor]:
    """The GRU's weights in ``bundle``'s ``model.onnx``, as the state dict of the ``nn.GRU`` they were exported from.

    The legacy exporter writes one ``GRU`` node per layer, each with ``W``
    ``[directions, 3H, I]``, ``R`` ``[directions, 3H, H]`` and ``B``
    ``[directions, 6H]`` (input biases, then hidden biases), every gate block
    in ONNX's z, r, h order; this undoes both.
    """
    graph = onnx.load_from_string(bundle.read(MODEL_FILE)).graph
    layers = [node for node in graph.node if node.op_type == "GRU"]
    if not layers:
        raise BundleCheckpointError(f"{bundle.source}: {MODEL_FILE} has no GRU node")
    read = functools.cache(bundle.read)
    state = {}
    for layer, node in enumerate(layers):
        linear_before_reset = next((a.i for a in node.attribute if a.name == "linear_before_reset"), 0)
        if linear_before_reset != 1:
            raise BundleCheckpointError(f"{bundle.source}: {MODEL_FILE}: GRU node {node.name!r} has linear_before_reset "
                                        f"{linear_before_reset}, PyTorch's GRU is 1")
        w, r, b = (_initializer(bundle, graph, name, read) for name in node.input[1:4])
        for direction, suffix in enumerate(DIRECTION_SUFFIXES[: w.shape[0]]):
            input_bias, hidden_bias = np.split(b[direction], 2)
            state.update({
                f"weight_ih_l{layer}{suffix}": _pytorch_gates(w[direction]),
                f"weight_hh_l{layer}{suffix}": _pytorch_gates(r[direction]),
                f"bias_ih_l{layer}{suffix}": _pytorch_gates(input_bias),
                f"bias_hh_l{layer}{suffix}": _pytorch_gates(hidden_bias),
            })
    return state


def _check_body(bundle: Bundle, config: ModelConfig) -> None:
    """Refuse bodies whose weights cannot be rebuilt: only the packaged, untrained whisper tiny.en encoder can."""
    if config.body != WHISPER_TINY_EN:
        raise BundleCheckpointError(f"{bundle.source}: a {config.body} body's weights live only in the bundle's graph; "
                                    f"only {WHISPER_TINY_EN} bodies can be rebuilt")
    if config.train_encoder_blocks:
        raise BundleCheckpointError(f"{bundle.source}: {config.train_encoder_blocks} encoder blocks were trained; "
                                    "only bodies with the pretrained encoder as it was published can be rebuilt")
    sha256 = (bundle.body or {}).get("sha256")
    if sha256 != PACKAGED_MODEL_SHA256:
        raise BundleCheckpointError(f"{bundle.source}: the encoder's weights are {sha256 or 'of unknown origin'}, "
                                    f"not {PACKAGED_REQUIREMENT}'s ({PACKAGED_MODEL_SHA256}); only those can be rebuilt")


def _check_against_bundle(model: SpeechRecognizer, bundle: Bundle) -> None:
    """Require the rebuilt model's log-probs to match the bundle's ``model.onnx`` (its parity tolerance, same transcript)."""
    tolerance = parity.tolerance_for(model.config)
    clips = parity.synthetic_clips(bundle.sample_rate, seconds=(CHECK_SECONDS,))
    with torch_threads(1):
        report = parity.compare_model(model, bundle.session(threads=1), clips, batch_sizes=(1,))
    if report.max_abs_diff > tolerance or report.transcripts_differing:
        raise BundleCheckpointError(f"{bundle.source}: the rebuilt model disagrees with {MODEL_FILE}: max |log-prob diff| "
                                    f"{report.max_abs_diff:.2e} (tolerance {tolerance:g}), "
                                    f"{report.transcripts_differing} transcript(s) differ")


def _head_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Head weights by manifest name (``head.scale``) -> ``model.head``'s state dict (``scale``)."""
    return {name.removeprefix(HEAD_PREFIX): weight for name, weight in weights.items()}


def _adaptation_fields(bundle: Bundle) -> dict[str, Any]:
    """The checkpoint's rates and inner-loop fields that the manifest's ``adaptation`` records."""
    adaptation = bundle.adaptation
    fields: dict[str, Any] = {
        "rates": bundle.rates() if adaptation["rates"] == "per-parameter" else None,
        # the exporter fills in a default rate for a checkpoint that had none
        "scalar_rate": None if adaptation.get("scalar_rate_source") == "default" else adaptation.get("scalar_rate"),
    }
    fields["update_rule"] = adaptation["update"]
    if adaptation.get("step_scales"):
        fields["step_scales"] = {name: torch.tensor(factors) for name, factors in adaptation["step_scales"].items()}
    return fields


def checkpoint_from_bundle(bundle_path: str | Path) -> dict[str, Any]:
    """The checkpoint (:func:`edgemeta.checkpoint.new_checkpoint`'s format) that ``bundle_path`` was exported from.

    Model, method, inner steps, rates (per-parameter or scalar, with the
    update rule and per-step factors when the manifest has them) and training
    speakers come from the bundle; a bundle whose enrollment starts from a
    head of its own (``adaptation["init"]``) gives that head to the model and
    its base head as ``zero_shot_head``, as ``meta-train --zero-shot-head init``
    wrote them. ``provenance`` records the bundle (path, digest, its
    provenance, and its ``languages`` and ``data``). Checked against the
    bundle's ``model.onnx`` on a synthetic clip. Raises
    :class:`~edgemeta.runtime.bundle.BundleError` for an unreadable bundle,
    :class:`BundleCheckpointError` for one that cannot be rebuilt or disagrees
    after rebuilding.
    """
    bundle = load_bundle(bundle_path)
    config = ModelConfig(**bundle.model_config)
    _check_body(bundle, config)
    model = new_model(config).eval()
    model.gru.load_state_dict(read_gru(bundle))
    base_head = bundle.head_weights()
    model.head.load_state_dict(_head_state(base_head))
    _check_against_bundle(model, bundle)

    fields = _adaptation_fields(bundle)
    if bundle.adaptation.get("init"):
        fields["zero_shot_head"] = base_head
        model.head.load_state_dict(_head_state(bundle.init_weights()))
    source = bundle.provenance
    provenance = {"recipe": RECIPE, "bundle": str(Path(bundle_path).resolve()), "bundle_digest": bundle.digest,
                  "bundle_provenance": source}
    provenance.update({key: source[key] for key in ("languages", "data") if key in source})
    return new_checkpoint(model, bundle.adaptation["method"], bundle.inner_steps, bundle.training_speakers,
                          provenance=provenance, **fields)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta checkpoint-from-bundle``."""
    parser = subparsers.add_parser(
        "checkpoint-from-bundle",
        help="rebuild a trainer checkpoint from a whisper-body bundle, to meta-train it further",
        description=(
            "Rebuild the checkpoint a bundle was exported from (whisper-tiny.en bodies with the packaged encoder): "
            "GRU weights from model.onnx, head weights and rates from the bundle, checked against the bundle's "
            "onnxruntime output. `edgemeta meta-train --init OUT` continues from it."
        ),
        epilog=(
            "examples:\n"
            "  edgemeta checkpoint-from-bundle runtime/builtin ~/.cache/edgemeta/builtin.pt   # the built-in bundle (repo root)\n"
            "  edgemeta checkpoint-from-bundle bundles/mine runs/mine.pt && "
            "edgemeta meta-train --init runs/mine.pt --method meta-sgd --out runs/meta-sgd-more"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory or .tar/.tar.gz archive")
    parser.add_argument("out", type=Path, metavar="OUT", help="checkpoint file to write (.pt)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild and save the checkpoint; exit 1 when the bundle cannot be rebuilt, 2 when it is unreadable."""
    try:
        checkpoint = checkpoint_from_bundle(args.bundle)
    except BundleCheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (BundleError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, checkpoint)
    print(f"wrote {args.out} ({checkpoint['method']}, {checkpoint['inner_steps']} inner steps, from {args.bundle})")
    return 0
