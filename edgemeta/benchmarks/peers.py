"""``edgemeta bench peers``: edgemeta side by side with pocketsphinx, on the same clips, in one run.

For each ``--manifest`` (its ``dataset`` is the manifest's folder name, as in
``edgemeta eval``) and each scored speaker, the same clips go through

- ``pocketsphinx``: its bundled en-us acoustic model, dictionary and default
  language model;
- ``pocketsphinx-grammar``: the same acoustic model and dictionary with a JSGF
  grammar "any sequence of the manifest's words", used when the manifest has at
  most 50 word types (spoken digits): how its users get accuracy;
- ``edgemeta`` k=0: the runtime with the bundle's base head;
- ``edgemeta`` k=K: after enrolling that speaker with K clips through
  ``edgemeta-runtime enroll``'s own code (``clips_from_source`` and
  ``enroll_and_save`` of :mod:`edgemeta.runtime.enrollment`), profiles under a
  temporary ``EDGEMETA_HOME``;
- ``edgemeta-words`` k=0 and k=K: the same heads, decoding only sequences of the
  manifest's words (``edgemeta-runtime transcribe --words``), where
  ``pocketsphinx-grammar`` is used.

Clips: per speaker, ``--clips`` clips are drawn (seeded); the first max(K)
are the enrollment pool (K-shot enrollment uses its first K) and the rest are
scored, the same clips for every system and k. Speakers the bundle lists as
its training speakers, and the training side of the committed speechocean762
split, are never scored.

Measurement: each system transcribes in a fresh worker process (this
module's :func:`worker_main`) that imports only that system, loads its model
(timed: model load), transcribes clip by clip on one thread after an untimed
one-second warm-up (RTF = decode wall seconds / audio seconds; CPU RTF the
same with the process's CPU seconds, steadier on a shared machine) and
reports its peak resident memory as ``VmHWM`` from ``/proc/self/status`` (a
child's ``ru_maxrss`` also counts the memory of the parent it was forked
from: measured here, 413 MB reported for a 14 MB child of a 413 MB parent).
Every system gets the same 16 kHz mono audio (:func:`read_audio`);
pocketsphinx's fillers (``<s>``, ``<sil>``, ``[NOISE]``, ``++...++``) and
pronunciation variant marks (``(2)``) are stripped; references and
hypotheses go through the same :func:`normalize_text` and the scorer of
:mod:`edgemeta.runtime.metrics`, as in ``edgemeta eval``. Model size counts
the files a system loads: pocketsphinx's acoustic model, dictionary and
language model (the grammar is built in memory); the bundle's manifest, ONNX
model with its weights, head, rates and language model (not the optional
int8 and streaming graphs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

# Only light modules at the top: the pocketsphinx worker imports this module and must not load torch.
from edgemeta.runtime.audio import SAMPLE_RATE, read_audio
from edgemeta.runtime.manifest import Clip, ManifestError, read_manifest, write_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.process_memory import peak_rss_bytes
from edgemeta.runtime.text import normalize_text
from edgemeta.splits import speechocean_split

if TYPE_CHECKING:
    from edgemeta.runtime.bundle import Bundle

POCKETSPHINX = "pocketsphinx"
GRAMMAR = "pocketsphinx-grammar"
EDGEMETA = "edgemeta"
EDGEMETA_WORDS = "edgemeta-words"
SYSTEMS = (POCKETSPHINX, GRAMMAR, EDGEMETA, EDGEMETA_WORDS)  # table order
GRAMMAR_MAX_WORD_TYPES = 50
GRAMMAR_NAME = "vocabulary"
FILLER = re.compile(r"<.*>|\[.*\]|\+\+.*\+\+")
VARIANT = re.compile(r"\(\d+\)$")
WORKER = "import sys; from edgemeta.benchmarks.peers import worker_main; sys.exit(worker_main())"
PEER_MISSING = ("pocketsphinx is not installed; it is this benchmark's peer, in the optional 'bench' "
                "extra: pip install -e '.[bench]'")
PLOT_MISSING = "--plot needs matplotlib, in the optional 'train' extra: pip install -e '.[train]'"
MB = 1e6
WARM_UP_SAMPLES = SAMPLE_RATE  # one second

EXAMPLES = """\
examples:
  # spoken digits: pocketsphinx with its default LM and with a digit grammar, edgemeta before and after 10 clips
  edgemeta bench peers --manifest ../shared/data/fsdd-dev/manifest.jsonl --json peers.jsonl --plot peers.png
  # several corpora, another bundle, 5-shot and 10-shot enrollment, 3 speakers each
  edgemeta bench peers --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
      --manifest data/flite/manifest.jsonl --bundle bundles/mine --k 5,10 --speakers 3
"""


class BenchError(RuntimeError):
    """A benchmark that cannot run; the message names the file or system and the problem."""


@dataclass
class Speaker:
    """One scored speaker: the enrollment pool (K-shot uses its first K clips) and the scored clips."""

    name: str
    pool: list[Clip]
    scored: list[Clip]


@dataclass
class Dataset:
    """One manifest's scored speakers and the word types of the whole manifest (normalised, sorted)."""

    name: str
    words: list[str]
    speakers: list[Speaker]

    @property
    def small_vocabulary(self) -> bool:
        """Whether pocketsphinx gets a grammar restricted to this manifest's words."""
        return len(self.words) <= GRAMMAR_MAX_WORD_TYPES


@dataclass
class Item:
    """One scored clip as one system and k transcribe it (``user``: the enrolled profile, or none)."""

    dataset: str
    system: str
    k: int
    speaker: str
    clip: Clip
    user: str | None = None


@dataclass
class Row:
    """One line of the table: a system (and k) on a dataset, per-speaker rates and the process's figures."""

    dataset: str
    system: str
    k: int
    speakers: list[str]
    cer: list[float]
    wer: list[float]
    clips: int
    rtf: float
    cpu_rtf: float
    load_seconds: float
    model_bytes: int
    peak_rss_bytes: int | None
    worse: float | None = None
    adapted: float | None = None

    @property
    def label(self) -> str:
        """``pocketsphinx``, ``pocketsphinx-grammar``, ``edgemeta k=10``, ``edgemeta-words k=0``."""
        return f"{self.system} k={self.k}" if self.system in (EDGEMETA, EDGEMETA_WORDS) else self.system


# Text and data --------------------------------------------------------------------


def say(message: str) -> None:
    """A progress or status line on stderr (stdout holds the table)."""
    print(message, file=sys.stderr, flush=True)


def strip_fillers(hypothesis: str) -> str:
    """pocketsphinx's words without fillers (``<sil>``, ``[NOISE]``, ``++UH++``) and variant marks (``read(2)``)."""
    words = (VARIANT.sub("", word) for word in hypothesis.split())
    return " ".join(word for word in words if word and not FILLER.fullmatch(word))


def word_types(clips: Sequence[Clip]) -> list[str]:
    """The distinct words of the clips' normalised transcripts, sorted."""
    return sorted({word for clip in clips for word in normalize_text(clip.text).split()})


def jsgf_grammar(words: Sequence[str]) -> str:
    """A JSGF grammar accepting any non-empty sequence of ``words``."""
    return f"#JSGF V1.0;\ngrammar {GRAMMAR_NAME};\npublic <utterance> = <word>+;\n<word> = {' | '.join(words)};\n"


def parse_ks(text: str) -> list[int]:
    """``"10"`` or ``"1,5,10"`` -> the enrollment sizes above 0, sorted (k=0 is always measured)."""
    try:
        ks = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes comma-separated whole numbers, not {text!r}") from None
    if not ks or min(ks) < 0:
        raise argparse.ArgumentTypeError(f"--k takes whole numbers >= 0, not {text!r}")
    return sorted(ks - {0})


def positive(text: str) -> int:
    """A whole number >= 1, for argparse."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def load_dataset(manifest: Path, speakers: int, clips: int, pool: int, excluded: set[str], seed: int) -> Dataset:
    """Read ``manifest`` and choose up to ``speakers`` speakers (sorted by id) with their pool and scored clips."""
    try:
        listed = read_manifest(manifest)
    except ManifestError as error:
        raise BenchError(str(error)) from None
    by_speaker: dict[str, list[Clip]] = defaultdict(list)
    for clip in listed:
        by_speaker[clip.speaker].append(clip)
    trained = sorted(set(by_speaker) & excluded)
    short = sorted(name for name in by_speaker if name not in excluded and len(by_speaker[name]) <= pool)
    chosen = []
    for name in sorted(set(by_speaker) - excluded - set(short))[:speakers]:
        drawn = random.Random(f"{seed}/{name}").sample(by_speaker[name], min(clips, len(by_speaker[name])))
        chosen.append(Speaker(name, drawn[:pool], drawn[pool:]))
    if trained:
        say(f"{manifest}: not scoring {len(trained)} speakers the model was or may have been trained on")
    if short:
        say(f"{manifest}: not scoring {len(short)} speakers with at most {pool} clips (nothing left after enrollment)")
    if not chosen:
        raise BenchError(f"{manifest}: no speaker to score ({len(by_speaker)} speakers, {len(trained)} trained on, "
                         f"{len(short)} with at most {pool} clips)")
    return Dataset(manifest.resolve().parent.name, word_types(listed), chosen)


# Worker: one process per system that loads one model and transcribes -------------


def bytes_on_disk(paths: Sequence[Path]) -> int:
    """Bytes on disk of files and of every file under folders."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files)


Transcribe = Callable[[np.ndarray, str | None], str]


def open_pocketsphinx(words: list[str] | None) -> tuple[Transcribe, list[Path], float]:
    """pocketsphinx with its default LM (``words`` None) or a grammar over ``words``: (transcribe, files, load seconds)."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise BenchError(PEER_MISSING) from None
    started = time.perf_counter()
    if words is None:
        decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    else:
        decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", lm=None)
        known = [word for word in words if decoder.lookup_word(word) is not None]
        if not known:
            raise BenchError(f"{GRAMMAR}: none of the manifest's {len(words)} words is in pocketsphinx's dictionary")
        if len(known) < len(words):
            say(f"{GRAMMAR}: left out of the grammar, not in pocketsphinx's dictionary: {' '.join(sorted(set(words) - set(known)))}")
        decoder.add_jsgf_string(GRAMMAR_NAME, jsgf_grammar(known))
        decoder.activate_search(GRAMMAR_NAME)
    load_seconds = time.perf_counter() - started
    files = [Path(decoder.config[key]) for key in ("hmm", "dict", "lm") if decoder.config[key]]

    def transcribe(audio: np.ndarray, user: str | None) -> str:
        # user: pocketsphinx has no per-user model
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return strip_fillers(hypothesis.hypstr) if hypothesis is not None else ""

    return transcribe, files, load_seconds


def open_edgemeta(bundle_path: str, home: str | None, users: set[str], words: list[str] | None) -> tuple[Transcribe, list[Path], float]:
    """The runtime's recognizer on one thread, with the enrolled users' heads: (transcribe, files, load seconds).

    Like ``edgemeta-runtime transcribe`` (``--words`` when ``words`` are given), it never imports torch
    (the users were enrolled by the parent).
    """
    from edgemeta.runtime.bundle import HEAD_FILE, HEAD_WEIGHTS_FILE, MANIFEST, MODEL_FILE, RATES_FILE, load_bundle
    from edgemeta.runtime.language_model import text_counts
    from edgemeta.runtime.profile_store import ProfileStore
    from edgemeta.runtime.recognizer import Recognizer

    started = time.perf_counter()
    bundle = load_bundle(bundle_path)
    recognizer = Recognizer(bundle, threads=1, words=None if words is None else text_counts(words))
    load_seconds = time.perf_counter() - started
    names = [MANIFEST, MODEL_FILE, HEAD_FILE, HEAD_WEIGHTS_FILE, RATES_FILE]
    external = bundle.manifest.get("external_data")
    if external and MODEL_FILE in external["used_by"]:
        names.append(external["file"])
    if bundle.decoder_settings and words is None:
        names.append(bundle.decoder_settings["file"])
    # As `edgemeta-runtime transcribe --user U` does: the profile must belong to this bundle.
    heads = {user: ProfileStore(home).load(user, bundle.digest).weights for user in users}
    current: list[str | None] = [None]

    def transcribe(audio: np.ndarray, user: str | None) -> str:
        if user != current[0]:
            recognizer.set_head(None if user is None else heads[user])
            current[0] = user
        return recognizer.transcribe([audio])[0].text

    return transcribe, [bundle.path / name for name in names], load_seconds


def worker_main() -> int:
    """A worker process: a job (JSON on stdin) in, its texts, timings and figures (one JSON line on stdout) out.

    Job: ``{"system", "words", "bundle", "home", "items": [{"audio", "user"}]}``.
    """
    from tqdm import tqdm

    job = json.loads(sys.stdin.read())
    items = job["items"]
    try:
        if job["system"] in (EDGEMETA, EDGEMETA_WORDS):
            users = {item["user"] for item in items if item["user"] is not None}
            transcribe, files, load_seconds = open_edgemeta(job["bundle"], job["home"], users, job["words"])
        else:
            transcribe, files, load_seconds = open_pocketsphinx(job["words"])
        transcribe(read_audio(items[0]["audio"], SAMPLE_RATE)[:WARM_UP_SAMPLES], None)  # first-call set-up, not timed
        texts, seconds, cpu_seconds, audio_seconds = [], [], [], []
        for item in tqdm(items, desc=job["system"], unit="clip", file=sys.stderr, disable=None):
            audio = read_audio(item["audio"], SAMPLE_RATE)
            started, cpu_started = time.perf_counter(), time.process_time()
            texts.append(transcribe(audio, item["user"]))
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
            audio_seconds.append(len(audio) / SAMPLE_RATE)
    except (ValueError, RuntimeError) as error:  # unreadable audio, bad bundle or profile, pocketsphinx refusing
        print(f"error: {job['system']}: {error}", file=sys.stderr)
        return 1
    result = {"texts": texts, "seconds": seconds, "cpu_seconds": cpu_seconds, "audio_seconds": audio_seconds,
              "load_seconds": load_seconds, "model_bytes": bytes_on_disk(files), "peak_rss_bytes": peak_rss_bytes()}
    print(json.dumps(result), flush=True)
    return 0


def run_worker(system: str, items: list[Item], words: list[str] | None = None, bundle: str | None = None,
               home: str | None = None) -> dict:
    """Transcribe ``items`` with ``system`` in a fresh process; returns the worker's JSON result."""
    job = {"system": system, "words": words, "bundle": bundle, "home": home,
           "items": [{"audio": str(item.clip.audio), "user": item.user} for item in items]}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", WORKER], input=json.dumps(job), stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise BenchError(f"{system}: the worker process failed (exit {done.returncode}); its error is printed above")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Enrollment -----------------------------------------------------------------------


def enroll(bundle: Bundle, datasets: list[Dataset], ks: list[int], home: Path) -> tuple[list[Item], dict[tuple[str, int, str], bool]]:
    """Enroll every scored speaker with k clips for each k, as ``edgemeta-runtime enroll --from`` does.

    Returns the items to transcribe with the enrolled heads and, per
    (dataset, k, speaker), whether enrollment kept an adapted head.
    """
    import torch
    from tqdm import tqdm

    from edgemeta.runtime.enrollment import clips_from_source, enroll_and_save
    from edgemeta.runtime.profile_store import ProfileStore

    torch.set_num_threads(1)  # as edgemeta-runtime's default --threads 1
    store = ProfileStore(home)
    items: list[Item] = []
    adapted: dict[tuple[str, int, str], bool] = {}
    jobs = [(d, s, k) for d in datasets for s in d.speakers for k in ks]
    for index, (dataset, speaker, k) in enumerate(tqdm(jobs, desc="enrolling", unit="speaker", file=sys.stderr, disable=None)):
        user = f"user{index:04d}-k{k}"
        manifest = home / "enrollment" / f"{user}.jsonl"
        write_manifest(manifest, speaker.pool[:k])
        clips, unreadable = clips_from_source(str(manifest))
        _, profile = enroll_and_save(bundle, store, user, clips, unreadable, threads=1)
        adapted[dataset.name, k, speaker.name] = profile.adapted
        items += [Item(dataset.name, EDGEMETA, k, speaker.name, clip, user) for clip in speaker.scored]
    return items, adapted


# Scoring and reporting ------------------------------------------------------------


def score_items(items: list[Item], result: dict) -> tuple[list[dict], list[Row]]:
    """Per-speaker JSON records and per (dataset, system, k) rows of one worker's transcripts."""
    groups: dict[tuple[str, str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, item in enumerate(items):
        groups[item.dataset, item.system, item.k][item.speaker].append(index)
    records, rows = [], []
    for (dataset, system, k), speakers in groups.items():
        row = Row(dataset, system, k, [], [], [], 0, 0.0, 0.0, result["load_seconds"], result["model_bytes"], result["peak_rss_bytes"])
        decode, cpu, audio = 0.0, 0.0, 0.0
        for speaker, indices in speakers.items():
            references = [normalize_text(items[i].clip.text) for i in indices]
            hypotheses = [normalize_text(result["texts"][i]) for i in indices]
            counts = score(references, hypotheses)
            seconds = sum(result["seconds"][i] for i in indices)
            length = sum(result["audio_seconds"][i] for i in indices)
            rtf = seconds / length
            records.append({"dataset": dataset, "system": system, "k": k, "speaker": speaker,
                            "cer": counts.cer, "wer": counts.wer, "rtf": rtf})
            row.speakers.append(speaker)
            row.cer.append(counts.cer)
            row.wer.append(counts.wer)
            row.clips += len(indices)
            decode, audio = decode + seconds, audio + length
            cpu += sum(result["cpu_seconds"][i] for i in indices)
        row.rtf, row.cpu_rtf = decode / audio, cpu / audio
        rows.append(row)
    return records, rows


def compare_with_unadapted(rows: list[Row], adapted: dict[tuple[str, int, str], bool], margin: float) -> None:
    """Set, on each enrolled edgemeta row, the fraction of speakers made worse (CER > before + margin) and kept adapted."""
    before = {(r.dataset, r.system, s): c for r in rows if r.k == 0 for s, c in zip(r.speakers, r.cer)}
    for row in rows:
        if row.k > 0:
            row.worse = float(np.mean([c > before[row.dataset, row.system, s] + margin for s, c in zip(row.speakers, row.cer)]))
            row.adapted = float(np.mean([adapted[row.dataset, row.k, s] for s in row.speakers]))


def spread(values: list[float]) -> float:
    """Sample standard deviation across speakers (0 for one speaker)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(rows: list[Row]) -> str:
    """The figures per dataset, system and k as a Markdown table."""
    header = ["dataset", "system", "k", "speakers", "scored clips", "CER mean", "CER median", "CER sd", "WER mean",
              "WER median", "WER sd", "worse", "adapted", "RTF", "CPU RTF", "load s", "size MB", "peak RSS MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.dataset, r.system, str(r.k), str(len(r.speakers)), str(r.clips),
                 f"{np.mean(r.cer):.3f}", f"{statistics.median(r.cer):.3f}", f"{spread(r.cer):.3f}",
                 f"{np.mean(r.wer):.3f}", f"{statistics.median(r.wer):.3f}", f"{spread(r.wer):.3f}",
                 "—" if r.worse is None else f"{r.worse:.2f}", "—" if r.adapted is None else f"{r.adapted:.2f}",
                 f"{r.rtf:.3f}", f"{r.cpu_rtf:.3f}", f"{r.load_seconds:.2f}", f"{r.model_bytes / MB:.1f}",
                 "n/a" if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / MB:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(rows: list[Row], path: Path) -> None:
    """A PNG bar chart: per dataset, mean CER and WER across speakers (± sd) of each system and k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(1 + 4.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r.dataset == dataset]
        x = np.arange(len(mine))
        for offset, name, values in ((-0.2, "CER", [r.cer for r in mine]), (0.2, "WER", [r.wer for r in mine])):
            axis.bar(x + offset, [np.mean(v) for v in values], 0.4, yerr=[spread(v) for v in values], capsize=3, label=name)
        axis.set_xticks(x, [r.label for r in mine], rotation=20, ha="right")
        axis.set_title(dataset)
        axis.set_ylim(bottom=0)
    axes[0][0].set_ylabel("error rate, mean ± sd across speakers")
    axes[0][0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def machine() -> str:
    """CPU model and count, for the table's caption."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs"


# Command --------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark; raises :class:`BenchError` for inputs it cannot use."""
    pool = max(args.k, default=0)
    if args.clips <= pool:
        raise BenchError(f"--clips {args.clips} leaves no clip to score after the {pool} enrollment clips")
    try:
        import pocketsphinx  # noqa: F401  (checked before any work; the workers import it again)
    except ImportError:
        raise BenchError(PEER_MISSING) from None
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BenchError(PLOT_MISSING) from None
    from edgemeta.runtime.adapter import CER_TOLERANCE
    from edgemeta.runtime.bundle import BUILTIN_BUNDLE, BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle or BUILTIN_BUNDLE)
    except BundleError as error:
        raise BenchError(f"{error} (pass --bundle PATH for another bundle)") from None
    excluded = set(bundle.training_speakers) | set(speechocean_split()["train_speakers"])
    datasets = [load_dataset(m, args.speakers, args.clips, pool, excluded, args.seed) for m in args.manifest]
    names = [d.name for d in datasets]
    if len(set(names)) < len(names):
        raise BenchError(f"two manifests share a folder name, which names their dataset: {', '.join(map(str, args.manifest))}")
    started = time.perf_counter()
    records: list[dict] = []
    rows: list[Row] = []

    def measure(system: str, items: list[Item], **job: str | list[str] | None) -> None:
        say(f"{system}: {len(items)} clips")
        new_records, new_rows = score_items(items, run_worker(system, items, **job))
        records.extend(new_records)
        rows.extend(new_rows)

    scored = [(d, s, clip) for d in datasets for s in d.speakers for clip in s.scored]
    measure(POCKETSPHINX, [Item(d.name, POCKETSPHINX, 0, s.name, clip) for d, s, clip in scored])
    for dataset in datasets:
        if dataset.small_vocabulary:
            items = [Item(dataset.name, GRAMMAR, 0, s.name, clip) for s in dataset.speakers for clip in s.scored]
            measure(GRAMMAR, items, words=dataset.words)
    with tempfile.TemporaryDirectory(prefix="edgemeta-bench-home-") as home:  # the enrollments' EDGEMETA_HOME
        enrolled, adapted = enroll(bundle, datasets, args.k, Path(home)) if args.k else ([], {})
        unadapted = [Item(d.name, EDGEMETA, 0, s.name, clip) for d, s, clip in scored]
        measure(EDGEMETA, unadapted + enrolled, bundle=str(bundle.source), home=home)
        for dataset in datasets:
            if dataset.small_vocabulary:
                items = [replace(item, system=EDGEMETA_WORDS) for item in unadapted + enrolled if item.dataset == dataset.name]
                measure(EDGEMETA_WORDS, items, words=dataset.words, bundle=str(bundle.source), home=home)
    compare_with_unadapted(rows, adapted, CER_TOLERANCE)
    rows.sort(key=lambda r: (names.index(r.dataset), SYSTEMS.index(r.system), r.k))

    print(f"edgemeta bench peers, {date.today().isoformat()}, {machine()}; bundle {bundle.source} "
          f"(digest {bundle.digest[:12]}); {len(scored)} scored clips; {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(rows))
    print("\nRTF: decode wall time / audio time on 1 thread; CPU RTF: the same with the process's CPU time, "
          "steadier on a busy machine.")
    print(f"worse: fraction of speakers whose CER after enrollment exceeds their k=0 CER + {CER_TOLERANCE}; "
          "adapted: fraction whose enrollment kept an adapted head (the guard may keep the base head)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
        say(f"wrote {args.json}: {len(records)} lines")
    if args.plot is not None:
        write_plot(rows, args.plot)
        say(f"wrote {args.plot}")
    return 0


def run(args: argparse.Namespace) -> int:
    """``edgemeta bench peers`` from parsed arguments: exit 0, or 1 with ``error: ...`` on stderr."""
    try:
        return benchmark(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``peers`` under ``edgemeta bench``."""
    parser = subparsers.add_parser(
        "peers",
        help="edgemeta against pocketsphinx on the same clips (CER, WER, RTF, load time, size, memory)",
        description="Side by side on the same clips and speakers: pocketsphinx (default language model, and a grammar "
        f"over the manifest's words when it has at most {GRAMMAR_MAX_WORD_TYPES}), edgemeta unadapted and after "
        "enrolling each speaker with k clips (and, where the grammar is used, edgemeta restricted to the same words). Prints a Markdown table; --json writes one line per system, speaker and k.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--bundle", metavar="PATH", help="edgemeta bundle (default: the built-in one)")
    parser.add_argument("--k", type=parse_ks, default=[10], metavar="K[,K...]", help="enrollment clips per speaker (default 10; k=0 is always measured)")
    parser.add_argument("--speakers", type=positive, default=6, metavar="N", help="speakers per manifest, by sorted id (default 6)")
    parser.add_argument("--clips", type=positive, default=20, metavar="N", help="clips drawn per speaker: max(K) to enroll, the rest scored (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-speaker clip draw (default 0)")
    parser.add_argument("--json", type=Path, metavar="OUT", help='write {"dataset", "system", "k", "speaker", "cer", "wer", "rtf"} lines')
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write a bar chart of CER and WER")
    parser.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta bench`` with its ``peers`` command."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks against peer recognizers", description="Benchmarks against peer recognizers.",
        epilog="example:\n  edgemeta bench peers --manifest ../shared/data/fsdd-dev/manifest.jsonl --speakers 3 --k 10 --json peers.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_commands(parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK"))
