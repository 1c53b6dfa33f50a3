"""The device-side bundle reader: verify a bundle, then hand out its parts.

A bundle (``docs/bundle-format.md``) is a directory, or a ``.tar`` /
``.tar.gz`` archive of one, holding ``manifest.json``, ``model.onnx``, the
head as TorchScript (``head.pt``), the initial head weights
(``head.safetensors``) and the learned rates (``rates.safetensors``), plus
optional ``stream.onnx``, ``weights.bin`` (the body weights ``model.onnx`` and
``stream.onnx`` share), ``model.int8.onnx`` and ``lm.npz`` (the character
language model of the beam-search decoder, ``manifest["decoder"]``); every
name comes from :mod:`edgemeta.runtime.bundle_format`. :func:`load_bundle` checks
the format version, that this runtime serves the model's sample rate and
vocabulary, and the sha256 of every listed file before anything is
used; each part is read once more as bytes and checked again just before it is
loaded, so the bytes that are loaded are the bytes that were checked
(``head.pt`` contains pickled data). sha256 detects corruption, not a
malicious bundle.

Typical use on the device::

    bundle = load_bundle(BUILTIN_BUNDLE)
    session = bundle.session(threads=1)
    log_probs, features, frame_lengths = session.run(None, {"waveform": x, "lengths": n})
    head = bundle.load_head()                   # TorchScript; parameters named as bundle.head_names
    params = dict(head.named_parameters())     # features: torch.from_numpy(that second output)
    loss_of = lambda _: ctc_loss(head(features).log_softmax(-1), ...)  # edgemeta.runtime.ctc_loss
    adapt(params, loss_of, bundle.rates(), bundle.inner_steps, in_place=True)  # edgemeta.runtime.update_rule
    session.run(None, {"waveform": x, "lengths": n, **bundle.head_inputs(params)})

Streaming (unidirectional models): ``bundle.stream_session()`` takes
``chunk`` ``[batch, samples]`` (a multiple of ``streaming["chunk_multiple"]``
samples) and ``state.*``, starting from :meth:`Bundle.initial_stream_state`,
and returns ``log_probs``, ``features`` and ``new_state.*`` in the same order;
the same head names can be fed to it. :class:`edgemeta.runtime.streaming.GraphStream`
feeds it as the device does.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnxruntime

from edgemeta.runtime.audio import SAMPLE_RATE
from edgemeta.runtime.bundle_format import (
    FORMAT_VERSION,
    HEAD_FILE,
    HEAD_WEIGHTS_FILE,
    MANIFEST,
    MODEL_FILE,
    RATES_FILE,
    REQUIRED_FILES,
    UPDATE_RULES,
    UPGRADES,
)
from edgemeta.runtime.ctc_decode import BeamSearch, Decoder, greedy_decode, word_list_search
from edgemeta.runtime.language_model import CharNgram, LanguageModelError
from edgemeta.runtime.text import VOCABULARY

if TYPE_CHECKING:
    import torch

    from edgemeta.runtime.update_rule import StepRates

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
BUILTIN_BUNDLE = Path(__file__).parent / "builtin"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class HeadParameter:
    """One adaptable parameter as the manifest lists it (PyTorch layout)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without its ``checksum`` key.

    Stored as ``manifest["checksum"]``: together with the per-file sha256 in
    ``files`` it makes a changed value anywhere in the bundle detectable.
    """
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` names a bundle archive (by suffix) rather than a directory."""
    return str(path).endswith(ARCHIVE_SUFFIXES)


class Bundle:
    """A verified bundle. Build one with :func:`load_bundle`.

    ``source`` is the path given (directory or archive); ``path`` the directory
    the files are read from (a private temporary copy for an archive, removed
    when the ``Bundle`` is garbage-collected). ``digest`` (sha256 of
    ``manifest.json``, which lists every other file's sha256) identifies the
    bundle's exact content, e.g. for profiles that belong to one bundle.
    """

    def __init__(self, source: Path, path: Path, manifest: dict[str, Any], digest: str) -> None:
        self.source = source
        self.path = path
        self.manifest = manifest
        self.digest = digest

    def __repr__(self) -> str:
        return f"Bundle({str(self.source)!r}, digest={self.digest[:12]})"

    # Manifest fields ---------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Audio rate the model expects (Hz)."""
        return int(self.manifest["sample_rate"])

    @property
    def vocabulary(self) -> list[str]:
        """Output symbols; index 0 is the CTC blank."""
        return list(self.manifest["vocabulary"])

    @property
    def model_config(self) -> dict[str, Any]:
        """The trainer's ``ModelConfig`` fields (as plain data)."""
        return dict(self.manifest["model"])

    @property
    def head_parameters(self) -> list[HeadParameter]:
        """The adaptable parameters in manifest order."""
        return [HeadParameter(p["name"], tuple(p["shape"]), p["dtype"]) for p in self.manifest["head"]["parameters"]]

    @property
    def head_names(self) -> list[str]:
        """Names of the adaptable parameters (``head.scale``, ...), manifest order."""
        return [p["name"] for p in self.manifest["head"]["parameters"]]

    @property
    def feature_size(self) -> int:
        """Width of the head's input features."""
        return int(self.manifest["head"]["feature_size"])

    @property
    def inner_steps(self) -> int:
        """S: how many gradient steps enrollment runs."""
        return int(self.manifest["inner_steps"])

    @property
    def adaptation(self) -> dict[str, Any]:
        """How the bundle was trained to adapt: ``method``, ``rates`` kind, ``scalar_rate``, ``update``, ``step_scales``, ``init``."""
        return dict(self.manifest["adaptation"])

    @property
    def update_rule(self) -> str:
        """The enrollment steps' update rule (:data:`edgemeta.runtime.update_rule.UPDATE_RULES`)."""
        return str(self.manifest["adaptation"]["update"])

    @property
    def has_init_head(self) -> bool:
        """Whether enrollment starts from a head of its own (``init.safetensors``) rather than the base head."""
        return bool(self.manifest["adaptation"].get("init"))

    @property
    def streaming(self) -> dict[str, Any] | None:
        """The streaming graph's description, or ``None`` for a model that cannot stream."""
        return self.manifest.get("streaming")

    @property
    def max_segment_seconds(self) -> float | None:
        """The longest audio one ``model.onnx`` run takes (a whisper body: 30 s), ``None`` when unlimited.

        Longer recordings are cut into segments by voice activity first.
        """
        limit = self.manifest.get("max_segment_seconds")
        return None if limit is None else float(limit)

    @property
    def body(self) -> dict[str, Any] | None:
        """The body's name, the source, sha256 and licence of its pretrained weights (``None`` in older bundles)."""
        return self.manifest.get("body")

    @property
    def has_int8(self) -> bool:
        """Whether the bundle carries ``model.int8.onnx``."""
        return self.manifest.get("int8") is not None

    @property
    def provenance(self) -> dict[str, Any]:
        """Recipe, data, training time, versions."""
        return dict(self.manifest["provenance"])

    @property
    def decoder_settings(self) -> dict[str, Any] | None:
        """The beam-search decoder's file and weights, ``None`` when the bundle decodes best-path."""
        return self.manifest.get("decoder")

    def decoder(self, greedy: bool = False, words: Mapping[str, float] | None = None) -> Decoder:
        """How this bundle turns ``[frames, vocabulary]`` log-probabilities into text.

        With ``words`` (word -> count), beam search over sequences of those
        words only; else beam search with the bundle's language model when it
        has one (and ``greedy`` is false), else best-path decoding.
        """
        if words is not None:
            return word_list_search(words)
        settings = self.decoder_settings
        if greedy or settings is None:
            return greedy_decode
        return BeamSearch(self._language_model, lm_weight=float(settings["lm_weight"]),
                          char_bonus=float(settings["char_bonus"]), beam=int(settings["beam"]))

    @cached_property
    def _language_model(self) -> CharNgram:
        """The decoder's language model, parsed once per bundle (read-only, shared by every decoder)."""
        name = self.manifest["decoder"]["file"]
        try:
            return CharNgram.from_bytes(self.read(name), f"{self.source}: {name}")
        except LanguageModelError as error:
            raise BundleError(str(error)) from None

    @property
    def training_speakers(self) -> list[str]:
        """Speakers the model was trained on (sorted), for evaluation warnings."""
        return list(self.manifest["provenance"].get("training_speakers", []))

    # Files -------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        """Path of a listed file inside :attr:`path` (not re-verified: prefer :meth:`read`)."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.source}: {name} is not listed in {MANIFEST}")
        return self.path / name

    def read(self, name: str) -> bytes:
        """A listed file's bytes, checked against the manifest's sha256 right here."""
        path = self.file(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BundleError(f"{self.source}: {name} is missing") from None
        if sha256_bytes(data) != self.manifest["files"][name]:
            raise BundleError(f"{self.source}: {name} is corrupt (sha256 differs from {MANIFEST})")
        return data

    def _tensors(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_safetensors  # torch only where the device trains

        data = self.read(name)
        try:
            tensors = load_safetensors(data)
        except Exception as error:  # safetensors raises its own error types
            raise BundleError(f"{self.source}: {name} is not a readable safetensors file ({error})") from None
        expected = {p.name: p.shape for p in self.head_parameters}
        got = {key: tuple(t.shape) for key, t in tensors.items()}
        if got != expected:
            raise BundleError(f"{self.source}: {name} holds {got}, the manifest's head is {expected}")
        return {p.name: tensors[p.name] for p in self.head_parameters}

    def head_weights(self) -> dict[str, torch.Tensor]:
        """Initial (base) head weights, name -> float32 tensor in PyTorch layout, manifest order."""
        return self._tensors(HEAD_WEIGHTS_FILE)

    def init_weights(self) -> dict[str, torch.Tensor]:
        """The head enrollment starts from: ``init.safetensors`` when the bundle has one, else the base head."""
        return self._tensors(self.manifest["adaptation"]["init"]) if self.has_init_head else self.head_weights()

    def rates(self) -> dict[str, torch.Tensor]:
        """Per-parameter learning rates λ, same names and shapes as :meth:`head_weights`."""
        return self._tensors(RATES_FILE)

    def step_rates(self) -> StepRates:
        """The rates enrollment steps with: λ, or one mapping per step (λ times each tensor's factor for that step)."""
        from edgemeta.runtime.update_rule import per_step_rates  # torch only where the device trains

        scales = self.manifest["adaptation"].get("step_scales")
        if not scales:
            return self.rates()
        if set(scales) != set(self.head_names) or any(len(v) != self.inner_steps for v in scales.values()):
            raise BundleError(f"{self.source}: {MANIFEST}'s step_scales need {self.inner_steps} factors for each of {self.head_names}")
        return per_step_rates(self.rates(), scales, self.inner_steps)

    def load_head(self) -> torch.jit.ScriptModule:
        """The head as TorchScript, input ``[batch, frames, feature_size]`` -> logits.

        Its ``named_parameters()`` are named exactly as :attr:`head_names`
        (``head.scale``, ...), in the same order, so
        ``dict(head.named_parameters())`` pairs with :meth:`rates`. Loaded
        from the checked bytes only.
        """
        import torch

        data = self.read(HEAD_FILE)
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in torch >= 2.9 but is what runs autograd on the device.
                warnings.simplefilter("ignore", FutureWarning)
                head = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as error:
            raise BundleError(f"{self.source}: {HEAD_FILE} is not a loadable TorchScript archive ({error})") from None
        names = [name for name, _ in head.named_parameters()]
        if names != self.head_names:
            raise BundleError(f"{self.source}: {HEAD_FILE} has parameters {names}, the manifest lists {self.head_names}")
        return head

    def head_inputs(self, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Feeds that override the graph's head weights (torch tensors or arrays): name -> contiguous float32 array."""
        unknown = set(weights) - set(self.head_names)
        if unknown:
            raise KeyError(f"not head parameters of {self.source}: {sorted(unknown)}")
        return {name: np.ascontiguousarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, dtype=np.float32)
                for name, w in weights.items()}

    def session(self, threads: int = 1, int8: bool = False) -> onnxruntime.InferenceSession:
        """An onnxruntime CPU session on ``model.onnx`` (or ``model.int8.onnx``) with ``threads`` intra-op threads.

        Inputs ``waveform`` float32 ``[batch, samples]``, ``lengths`` int64
        ``[batch]`` and, optionally, any head parameter by name (see
        :meth:`head_inputs`). Outputs ``log_probs``, ``features``, ``frame_lengths``.
        """
        if int8:
            if not self.has_int8:
                raise BundleError(f"{self.source}: the bundle has no int8 model")
            return self.create_session(self.manifest["int8"]["file"], threads)
        return self.create_session(MODEL_FILE, threads)

    def stream_session(self, threads: int = 1) -> onnxruntime.InferenceSession:
        """An onnxruntime session on the streaming graph (see :attr:`streaming` for its state)."""
        if self.streaming is None:
            raise BundleError(f"{self.source}: the bundle has no streaming graph (bidirectional model)")
        return self.create_session(self.streaming["file"], threads)

    def initial_stream_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Zero state for a new stream: ``state.*`` name -> float32 ``[batch, *shape]``."""
        if self.streaming is None:
            raise BundleError(f"{self.source}: the bundle has no streaming graph (bidirectional model)")
        return {s["name"]: np.zeros((batch, *s["shape"]), dtype=np.float32) for s in self.streaming["state"]}

    def create_session(self, name: str, threads: int = 1) -> onnxruntime.InferenceSession:
        """An onnxruntime CPU session on the listed ONNX file ``name``, built from its checked bytes."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        graph = self.read(name)
        external = self.manifest.get("external_data")
        if external and name in external["used_by"]:
            if not hasattr(options, "add_external_initializers_from_files_in_memory"):
                raise BundleError(f"{self.source}: {name} keeps its weights in {external['file']}, which needs "
                                  f"onnxruntime >= 1.23 (this is {onnxruntime.__version__})")
            # onnxruntime copies the weights into the session; the buffer may go after creation.
            weights = np.frombuffer(self.read(external["file"]), dtype=np.uint8)
            options.add_external_initializers_from_files_in_memory([external["file"]], [weights], [len(weights)])
        try:
            return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise BundleError(f"{self.source}: {name} is not a loadable ONNX model ({error})") from None


def _extract_archive(archive: Path) -> tuple[Path, Path]:
    """Unpack ``archive`` into a new temporary directory; return (temporary root, bundle directory)."""
    root = Path(tempfile.mkdtemp(prefix="edgemeta-bundle-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        shutil.rmtree(root, ignore_errors=True)
        raise BundleError(f"{archive}: not a readable bundle archive ({error})") from None
    if (root / MANIFEST).is_file():
        return root, root
    children = [child for child in root.iterdir() if child.is_dir()]
    if len(children) == 1 and (children[0] / MANIFEST).is_file():
        return root, children[0]
    shutil.rmtree(root, ignore_errors=True)
    raise BundleError(f"{archive}: no {MANIFEST} at the top of the archive (or in its single folder)")


def read_manifest(directory: Path, source: Path) -> tuple[dict[str, Any], str]:
    """Parse and check ``manifest.json``; return it and its sha256."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{source}: {MANIFEST} is missing") from None
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{source}: {MANIFEST} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: {MANIFEST} is not a JSON object")
    version = manifest.get("format_version")
    if not (isinstance(version, int) and 1 <= version <= FORMAT_VERSION):
        raise BundleError(
            f"{source}: {MANIFEST} has format_version {version!r}; this runtime reads format_version 1 to {FORMAT_VERSION}"
        )
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise BundleError(f"{source}: {MANIFEST} was changed after export (its checksum does not match its content)")
    # The checksum covers the manifest as written; older versions are brought up to date after it.
    for older in range(version, FORMAT_VERSION):
        manifest = UPGRADES[older](manifest)
    for key in ("sample_rate", "vocabulary", "model", "head", "inner_steps", "adaptation", "provenance", "files"):
        if key not in manifest:
            raise BundleError(f"{source}: {MANIFEST} lacks the key {key!r}")
    check_servable(manifest, source)
    files = manifest["files"]
    optional = [entry["file"] for entry in (manifest.get("streaming"), manifest.get("int8"), manifest.get("decoder")) if entry]
    optional += [manifest["external_data"]["file"]] if manifest.get("external_data") else []
    optional += [manifest["adaptation"]["init"]] if manifest["adaptation"].get("init") else []
    if manifest["adaptation"].get("update") not in UPDATE_RULES:
        raise BundleError(f"{source}: {MANIFEST} has update rule {manifest['adaptation'].get('update')!r}; this runtime knows {', '.join(UPDATE_RULES)}")
    for name in (*REQUIRED_FILES, *optional):
        if name not in files:
            raise BundleError(f"{source}: {MANIFEST} does not list {name} under 'files'")
    for name in files:
        if Path(name).name != name or name in (".", "..", MANIFEST):
            raise BundleError(f"{source}: {MANIFEST} lists an invalid file name {name!r}")
    return manifest, sha256_bytes(data)


def check_servable(manifest: Mapping[str, Any], source: Path) -> None:
    """Refuse a model whose audio rate or output symbols this runtime cannot serve.

    Text is normalised, encoded and decoded with :data:`edgemeta.runtime.text.VOCABULARY`,
    and voice activity (live endpointing, segmenting long files) runs at
    :data:`edgemeta.runtime.audio.SAMPLE_RATE`; a bundle made for anything
    else would transcribe garbage rather than fail.
    """
    if manifest["sample_rate"] != SAMPLE_RATE:
        raise BundleError(f"{source}: the model expects {manifest['sample_rate']!r} Hz audio; this runtime serves "
                          f"{SAMPLE_RATE} Hz models only")
    if list(manifest["vocabulary"]) != list(VOCABULARY):
        raise BundleError(f"{source}: the model's vocabulary {manifest['vocabulary']!r} is not this runtime's "
                          f"{list(VOCABULARY)!r} (index 0 the CTC blank), which its text normaliser and decoders use")


def verify_files(directory: Path, manifest: Mapping[str, Any], source: Path) -> None:
    """Check every file the manifest lists exists and has its sha256; errors name the file."""
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{source}: {name} is missing")
        if sha256_file(path) != expected:
            raise BundleError(f"{source}: {name} is corrupt (sha256 differs from {MANIFEST})")


def load_bundle(path: str | Path) -> Bundle:
    """Open and verify a bundle directory or ``.tar`` / ``.tar.gz`` archive.

    Raises :class:`BundleError` naming the file for a missing path, an
    unreadable or unknown-version ``manifest.json``, a missing file or a file
    whose sha256 differs from the manifest's.
    """
    source = Path(path)
    if source.is_dir():
        manifest, digest = read_manifest(source, source)
        verify_files(source, manifest, source)
        return Bundle(source, source, manifest, digest)
    if source.is_file() and is_archive(source):
        root, directory = _extract_archive(source)
        try:
            manifest, digest = read_manifest(directory, source)
            verify_files(directory, manifest, source)
        except BundleError:
            shutil.rmtree(root, ignore_errors=True)
            raise
        bundle = Bundle(source, directory, manifest, digest)
        weakref.finalize(bundle, shutil.rmtree, root, True)
        return bundle
    if source.is_file():
        raise BundleError(f"{source}: not a bundle (expected a directory or a {'/'.join(ARCHIVE_SUFFIXES)} archive)")
    raise BundleError(f"{source}: no such bundle")
