"""int8 body for ``model.int8.onnx``: dynamic int8 MatMuls plus weight-only int8 Conv and GRU weights.

``onnxruntime.quantization.quantize_dynamic`` runs the body's MatMuls (the
conv blocks' pointwise layers, most of the weights) on int8. Its Conv
quantization (``ConvInteger``) made the model slower than fp32 here, and it
leaves GRU in fp32, so Conv and GRU weights are instead stored as int8 with a
per-output-unit scale and dequantized inside the graph (``DequantizeLinear``):
the file shrinks while those layers compute in fp32.

Two parts stay fp32 on purpose:

- the head (every node downstream of a head weight): it must stay
  overridable, in PyTorch layout, for adapted weights;
- the frontend (nodes in the ``/frontend/`` scope): int8 would quantize the
  waveform before the STFT, and even a weight-only int8 DFT basis moved
  log-mel features by up to 1.0 (mean 0.02) on speech.

A whisper tiny.en body quantized this way (encoder MatMuls dynamic int8,
per channel; its convolutions and the GRU weight-only int8; what stays float
stored fp16 as in ``model.onnx``): 10.6 MB against 19.5 MB for ``model.onnx``
with its weights, RTF 0.0057 against 0.0090 on one thread, and on the 160
clips of the 8 dev speakers a CER 0.11 points *lower* (0.2498 vs 0.2509 with
the GRU + head of ``edgemeta train --body whisper-tiny.en``, 20 minutes; 80
of 160 transcripts differ; with a head trained 4 minutes: 0.3127 vs 0.3145),
within the 0.5 points a smaller encoder may cost.
The encoder's outputs themselves move a lot (DESIGN.md: up to 2.7 with a
naive ``quantize_dynamic``; the head's input features here by 0.28 on
average), so the CER, not that distance, decided.
"""

from __future__ import annotations

import logging
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgemeta.runtime.bundle_format import INT8_FILE

FRONTEND_SCOPE = "/frontend/"
DYNAMIC_OPS = ["MatMul"]
# op type -> {input index: leading axes that index one output unit (one scale each)}
WEIGHT_ONLY = {"GRU": {1: 2, 2: 2}, "Conv": {1: 1}}


def downstream_nodes(graph: onnx.GraphProto, sources: Iterable[str]) -> list[str]:
    """Names of the nodes that (transitively) consume any tensor in ``sources``."""
    reached, names = set(sources), []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if any(name in reached for name in node.input):
            names.append(node.name)
            reached.update(node.output)
    return names


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer logs shape-inference notes on the root logger for every padded conv; hide them."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_weights(graph_model: onnx.ModelProto, excluded: Iterable[str] = ()) -> int:
    """Store the :data:`WEIGHT_ONLY` initializers of nodes not in ``excluded`` as int8 (in place); return how many.

    Each becomes int8 rows with one symmetric scale per output unit,
    ``DequantizeLinear`` and a ``Reshape`` back to the original shape, under
    the original name, so the consuming node is unchanged.
    """
    graph, skip = graph_model.graph, set(excluded)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_nodes, count = [], 0
    for node in graph.node:
        for index, unit_axes in WEIGHT_ONLY.get(node.op_type, {}).items() if node.name not in skip else ():
            name = node.input[index]
            if name not in initializers or uses[name] != 1:
                continue
            weight = numpy_helper.to_array(initializers[name])
            rows = weight.reshape(math.prod(weight.shape[:unit_axes]), -1)
            scale = np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127.0
            quantized = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8)
            graph.initializer.remove(initializers[name])
            graph.initializer.extend([
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero"),
                numpy_helper.from_array(np.array(weight.shape, dtype=np.int64), f"{name}_shape"),
            ])
            new_nodes += [
                helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [f"{name}_rows"], axis=0),
                helper.make_node("Reshape", [f"{name}_rows", f"{name}_shape"], [name]),
            ]
            count += 1
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return count


def quantize_body(graph_model: onnx.ModelProto, head_names: Iterable[str]) -> onnx.ModelProto:
    """The int8 version of an exported graph: body quantized, frontend and head fp32; checked."""
    graph_model = onnx.ModelProto.FromString(graph_model.SerializeToString())  # the quantizer edits its input
    graph = graph_model.graph
    excluded = downstream_nodes(graph, head_names) + [node.name for node in graph.node if FRONTEND_SCOPE in node.name]
    with tempfile.TemporaryDirectory() as folder, _quiet_root_logger():
        output = Path(folder) / INT8_FILE
        quantize_dynamic(graph_model, output, op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8,
                         per_channel=True, nodes_to_exclude=excluded)
        quantized = onnx.load(output)
    quantize_weights(quantized, excluded)
    onnx.checker.check_model(quantized, full_check=True)
    return quantized
