"""``edgemeta bench peers``' worker: one process per system that loads one model and transcribes, timed.

A fresh process (``python -c``, not a fork) so that its load time and peak
memory are the system's own. It imports only light modules at the top and,
per job, only the system it measures: the pocketsphinx and faster-whisper
workers never load torch, and edgemeta's transcribes as ``edgemeta-runtime
transcribe`` does, without torch (the parent enrolled the users).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from edgemeta.runtime.audio import read_audio
from edgemeta.runtime.process_memory import peak_rss_bytes

POCKETSPHINX = "pocketsphinx"
GRAMMAR = "pocketsphinx-grammar"
EDGEMETA = "edgemeta"
EDGEMETA_WORDS = "edgemeta-words"
WHISPER = "whisper-tiny.en"
GRAMMAR_NAME = "vocabulary"
FILLER = re.compile(r"<.*>|\[.*\]|\+\+.*\+\+")
VARIANT = re.compile(r"\(\d+\)$")
PEER_MISSING = ("pocketsphinx is not installed; it is this benchmark's peer, in the optional 'bench' "
                "extra: pip install -e '.[bench]'")
WHISPER_MISSING = ("faster-whisper is not installed; it runs the whisper-tiny.en peer, in the optional 'bench' "
                   "extra: pip install -e '.[bench]'")
POCKETSPHINX_RATE = 16000  # Hz, of its en-us acoustic model
WHISPER_RATE = 16000  # Hz, whisper's front end
WARM_UP_SECONDS = 1
Transcribe = Callable[[np.ndarray, str | None], str]


class System(NamedTuple):
    """A loaded system: how it transcribes (audio at ``sample_rate``, user), its model files and load seconds."""

    transcribe: Transcribe
    files: list[Path]
    load_seconds: float
    sample_rate: int


class BenchError(RuntimeError):
    """A benchmark that cannot run; the message names the file or system and the problem."""


def say(message: str) -> None:
    """A progress or status line on stderr (stdout holds the table, or the worker's result)."""
    print(message, file=sys.stderr, flush=True)


def strip_fillers(hypothesis: str) -> str:
    """pocketsphinx's words without fillers (``<sil>``, ``[NOISE]``, ``++UH++``) and variant marks (``read(2)``)."""
    words = (VARIANT.sub("", word) for word in hypothesis.split())
    return " ".join(word for word in words if word and not FILLER.fullmatch(word))


def jsgf_grammar(words: Sequence[str]) -> str:
    """A JSGF grammar accepting any non-empty sequence of ``words``."""
    return f"#JSGF V1.0;\ngrammar {GRAMMAR_NAME};\npublic <utterance> = <word>+;\n<word> = {' | '.join(words)};\n"


def bytes_on_disk(paths: Sequence[Path]) -> int:
    """Bytes on disk of files and of every file under folders."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files)


def open_pocketsphinx(words: list[str] | None) -> System:
    """pocketsphinx with its default LM (``words`` None) or a grammar over ``words``."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise BenchError(PEER_MISSING) from None
    started = time.perf_counter()
    if words is None:
        decoder = Decoder(samprate=POCKETSPHINX_RATE, loglevel="FATAL")
    else:
        decoder = Decoder(samprate=POCKETSPHINX_RATE, loglevel="FATAL", lm=None)
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

    return System(transcribe, files, load_seconds, POCKETSPHINX_RATE)


def open_faster_whisper(model_dir: str) -> System:
    """faster-whisper on the CTranslate2 whisper model in ``model_dir``, as its users run it on a small CPU:
    int8, one thread, greedy (beam 1), English, its own decoder and text (no per-user model)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise BenchError(WHISPER_MISSING) from None
    started = time.perf_counter()
    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)
    load_seconds = time.perf_counter() - started

    def transcribe(audio: np.ndarray, user: str | None) -> str:
        segments, _ = model.transcribe(audio, language="en", beam_size=1)
        return " ".join(segment.text.strip() for segment in segments)  # the segments are lazy: decoding happens here

    return System(transcribe, [Path(model_dir)], load_seconds, WHISPER_RATE)


def open_edgemeta(bundle_path: str, home: str | None, users: set[str], words: list[str] | None) -> System:
    """The runtime's recognizer on one thread, with the enrolled users' heads, taking audio at the bundle's rate.

    Like ``edgemeta-runtime transcribe`` (``--words`` when ``words`` are given), it never imports torch
    (the users were enrolled by the parent).
    """
    from edgemeta.runtime.bundle import load_bundle
    from edgemeta.runtime.bundle_format import HEAD_FILE, HEAD_WEIGHTS_FILE, MANIFEST, MODEL_FILE, RATES_FILE
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

    return System(transcribe, [bundle.path / name for name in names], load_seconds, bundle.sample_rate)


def worker_main() -> int:
    """A worker process: a job (JSON on stdin) in, its texts, timings and figures (one JSON line on stdout) out.

    Job: ``{"system", "words", "bundle", "home", "model", "items": [{"audio", "user"}]}`` (``model``: the
    whisper peer's model folder).
    """
    from tqdm import tqdm

    job = json.loads(sys.stdin.read())
    items = job["items"]
    try:
        if job["system"] in (EDGEMETA, EDGEMETA_WORDS):
            users = {item["user"] for item in items if item["user"] is not None}
            system = open_edgemeta(job["bundle"], job["home"], users, job["words"])
        elif job["system"] == WHISPER:
            system = open_faster_whisper(job["model"])
        else:
            system = open_pocketsphinx(job["words"])
        rate = system.sample_rate
        system.transcribe(read_audio(items[0]["audio"], rate)[: WARM_UP_SECONDS * rate], None)  # first-call set-up, not timed
        texts, seconds, cpu_seconds, audio_seconds = [], [], [], []
        for item in tqdm(items, desc=job["system"], unit="clip", file=sys.stderr, disable=None):
            audio = read_audio(item["audio"], rate)
            started, cpu_started = time.perf_counter(), time.process_time()
            texts.append(system.transcribe(audio, item["user"]))
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
            audio_seconds.append(len(audio) / rate)
    except (ValueError, RuntimeError) as error:  # unreadable audio, bad bundle or profile, a peer refusing
        print(f"error: {job['system']}: {error}", file=sys.stderr)
        return 1
    result = {"texts": texts, "seconds": seconds, "cpu_seconds": cpu_seconds, "audio_seconds": audio_seconds,
              "load_seconds": system.load_seconds, "model_bytes": bytes_on_disk(system.files), "peak_rss_bytes": peak_rss_bytes()}
    print(json.dumps(result), flush=True)
    return 0


def run_worker(system: str, items: Sequence[tuple[str, str | None]], words: list[str] | None = None, bundle: str | None = None,
               home: str | None = None, model: str | None = None) -> dict:
    """Transcribe ``items`` (audio path, enrolled user or ``None``) with ``system`` in a fresh process; its JSON result."""
    job = {"system": system, "words": words, "bundle": bundle, "home": home, "model": model,
           "items": [{"audio": a, "user": u} for a, u in items]}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", "import sys; from edgemeta.benchmarks.peer_worker import worker_main; sys.exit(worker_main())"]
    done = subprocess.run(command, input=json.dumps(job), stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise BenchError(f"{system}: the worker process failed (exit {done.returncode}); its error is printed above")
    return json.loads(done.stdout.strip().splitlines()[-1])
