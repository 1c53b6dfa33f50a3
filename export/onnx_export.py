"""ONNX export with the head's weights as overridable initializers.

The legacy (TorchScript-tracing) exporter is used: it exports this model in
about a second (``export_stage_seconds`` of ``python -m edgemeta.export.benchmark``,
0.72 s in ``reports/export-benchmark.json``), where DESIGN.md gives ~65 s for
the dynamo exporter on a similar model. The
graph is traced with every head parameter as an explicit input named as in
the manifest (``head.scale``, ``head.hidden.weight``, ...), so the exporter
can neither fold nor rename nor transpose them; afterwards each such input
gets an initializer holding the base weight, which makes it an *overridable
initializer*: onnxruntime uses the base weight unless the caller feeds one.

``model.onnx`` and ``stream.onnx`` hold the same body weights; :func:`share_weights`
moves them into one external-data file both graphs point into, so a bundle
carries them once. :func:`store_exact_fp16` halves the weights that float16
holds exactly (a pretrained whisper encoder's: they were published in fp16).
"""

from __future__ import annotations

import hashlib
import io
from typing import Iterable, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import set_external_data
from torch import nn
from torch.nn import functional as F
# torch.func.functional_call refuses to run under jit tracing (which the legacy
# exporter uses); this is the context manager it is built on.
from torch.nn.utils.stateless import _reparametrize_module

from edgemeta.model import SpeechRecognizer, StreamingRecognizer
from edgemeta.runtime.bundle_format import (
    CHUNK,
    FEATURES,
    FRAME_LENGTHS,
    HEAD_PREFIX,
    LENGTHS,
    LOG_PROBS,
    MODEL_INPUTS,
    MODEL_OUTPUTS,
    STREAM_OUTPUTS,
    WAVEFORM,
    new_state_name,
)

OPSET = 17
EXAMPLE_SAMPLES = 8000
SHARED_MIN_BYTES = 1024  # smaller tensors (shapes, scalars) stay inline
FP16_MIN_ELEMENTS = 1024  # smaller tensors (shapes, scalars, norms) stay float32: little to gain, and some feed shape ops
ALIGNMENT = 64


class WholeUtterance(nn.Module):
    """``(waveform, lengths) -> (log_probs, features, frame_lengths)``: the graph of ``model.onnx``."""

    def __init__(self, model: SpeechRecognizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.body(waveform, lengths)
        log_probs = F.log_softmax(self.model.head(features), dim=-1)
        return log_probs, features, self.model.frame_lengths(lengths)


class HeadAsInputs(nn.Module):
    """Runs ``inner`` with ``head``'s parameters replaced by trailing positional inputs."""

    def __init__(self, inner: nn.Module, head: nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.inner, self.head, self.n_inputs = inner, head, n_inputs
        self.names = [name for name, _ in head.named_parameters()]

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs, weights = args[: self.n_inputs], args[self.n_inputs :]
        with _reparametrize_module(self.head, dict(zip(self.names, weights))):
            return self.inner(*inputs)


def make_overridable(graph_model: onnx.ModelProto, weights: dict[str, torch.Tensor]) -> None:
    """Give each graph input named in ``weights`` an initializer holding that weight (in place)."""
    inputs = {value.name for value in graph_model.graph.input}
    missing = sorted(set(weights) - inputs)
    if missing:
        raise ValueError(f"the exported graph lacks inputs {missing}")
    for name, weight in weights.items():
        graph_model.graph.initializer.append(numpy_helper.from_array(weight.detach().float().numpy(), name))


def _trace(
    module: nn.Module,
    model: SpeechRecognizer,
    example: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> onnx.ModelProto:
    """Export ``module`` (which uses ``model.head``) with the head as overridable initializers; checked."""
    weights = {HEAD_PREFIX + name: p.detach() for name, p in model.head.named_parameters()}
    wrapper = HeadAsInputs(module, model.head, len(example)).eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (*example, *weights.values()),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[*input_names, *weights],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
        )
    graph_model = onnx.load_from_string(buffer.getvalue())
    make_overridable(graph_model, weights)
    onnx.checker.check_model(graph_model, full_check=True)
    return graph_model


def export_model(model: SpeechRecognizer) -> onnx.ModelProto:
    """``model.onnx``: inputs ``waveform`` [batch, samples], ``lengths`` [batch]; outputs :data:`MODEL_OUTPUTS`."""
    model = model.eval()
    example = (torch.randn(2, EXAMPLE_SAMPLES), torch.tensor([EXAMPLE_SAMPLES, EXAMPLE_SAMPLES * 3 // 4]))
    dynamic_axes = {
        WAVEFORM: {0: "batch", 1: "samples"},
        LENGTHS: {0: "batch"},
        LOG_PROBS: {0: "batch", 1: "frames"},
        FEATURES: {0: "batch", 1: "frames"},
        FRAME_LENGTHS: {0: "batch"},
    }
    return _trace(WholeUtterance(model), model, example, MODEL_INPUTS, MODEL_OUTPUTS, dynamic_axes)


def export_stream(streamer: StreamingRecognizer) -> onnx.ModelProto:
    """``stream.onnx``: inputs ``chunk`` + ``state.*``; outputs ``log_probs``, ``features``, ``new_state.*``."""
    streamer = streamer.eval()
    state_names = list(streamer.state_shapes())
    new_state_names = [new_state_name(name) for name in state_names]
    example = (torch.randn(2, streamer.chunk_multiple * 4), *streamer.initial_state(2))
    dynamic_axes = {name: {0: "batch"} for name in (*state_names, *new_state_names)}
    dynamic_axes.update({
        CHUNK: {0: "batch", 1: "samples"},
        LOG_PROBS: {0: "batch", 1: "frames"},
        FEATURES: {0: "batch", 1: "frames"},
    })
    return _trace(streamer, streamer.model, example, [CHUNK, *state_names], [*STREAM_OUTPUTS, *new_state_names], dynamic_axes)


def store_exact_fp16(graph_model: onnx.ModelProto, keep: Iterable[str] = ()) -> int:
    """Store each large float32 initializer that float16 holds exactly as float16, cast back at load (in place).

    Returns the bytes saved. Initializers named in ``keep`` (the overridable
    head: it must stay a float32 graph input) are left alone, and so is any
    tensor float16 would round, so every output stays bit-identical: whisper's
    encoder weights came as fp16 and are stored at half size, trained float32
    tensors (GRU, trained blocks, the front end's bases) keep their precision.
    Each ``Cast`` reads only an initializer, so onnxruntime's constant folding
    upcasts it once, when the session is created, not on every run.
    """
    graph, kept = graph_model.graph, set(keep)
    casts, saved = [], 0
    for initializer in list(graph.initializer):
        if initializer.name in kept or initializer.data_type != TensorProto.FLOAT or np.prod(initializer.dims) < FP16_MIN_ELEMENTS:
            continue
        weight = numpy_helper.to_array(initializer)
        half = weight.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), weight):
            continue
        graph.initializer.remove(initializer)
        graph.initializer.append(numpy_helper.from_array(half, initializer.name + "_fp16"))
        casts.append(onnx.helper.make_node("Cast", [initializer.name + "_fp16"], [initializer.name], to=TensorProto.FLOAT))
        saved += weight.nbytes - half.nbytes
    nodes = casts + list(graph.node)  # casts first, before every consumer: ONNX graphs are topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return saved


def share_weights(graphs: Sequence[onnx.ModelProto], location: str) -> bytes:
    """Move the large initializers of ``graphs`` into one blob (in place); return the blob.

    Identical tensors (same type, shape and bytes, whatever their names) are
    stored once. Each initializer then points at ``location`` (offset,
    length); the caller writes the blob there, next to the graphs.
    """
    blob, offsets = bytearray(), {}
    for graph_model in graphs:
        for tensor in graph_model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < SHARED_MIN_BYTES:
                continue
            data = tensor.raw_data
            key = hashlib.sha256(bytes(f"{tensor.data_type}:{list(tensor.dims)}:", "ascii") + data).hexdigest()
            if key not in offsets:
                blob += b"\0" * (-len(blob) % ALIGNMENT)
                offsets[key] = len(blob)
                blob += data
            set_external_data(tensor, location, offset=offsets[key], length=len(data))
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
    return bytes(blob)
