"""Synthetic multi-speaker corpora from espeak-ng, festival and flite.

A speaker is a :class:`VoiceSpec` (engine, voice, variant, pitch, rate); a
corpus gives each speaker its own channel condition (room, noise, band limit,
gain: :mod:`edgemeta.augment`) and its own generated prompts
(:mod:`edgemeta.prompts`). Everything is drawn from one seed, so the same
seed writes the same manifest and the same audio. Every clip records its
``language`` (ISO 639-1).

Besides open English prompts, a corpus can hold the tasks where a user's own
clips teach the most: English speakers reading only a narrow vocabulary
(``--vocabulary digits|commands``; their speaker ids end in ``-digits`` or
``-commands``, apart from the same voice reading open prompts), or espeak-ng
speakers of other languages (``--languages``, split into train, dev and test
by ``splits/languages.json``) reading sentences of their language's most
frequent words, transcripts folded to the model's 28 characters.

flite is never a default engine: its rms and awb voices are the voices no
model is trained on, kept for evaluation (``edgemeta synth --engine flite``).
Unseen espeak-ng speakers for evaluating a model are drawn with
``--unseen-by MODEL``: no variant any of its training speakers used, so they
differ from every one of them in voice, not only in pitch and rate.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
from tqdm import tqdm

from edgemeta.augment import ChannelCondition, peak_normalize
from edgemeta.prompts import NARROW_VOCABULARIES, generate_prompt, load_dictionary, word_sentence
from edgemeta.runtime.audio import SAMPLE_RATE, resample, write_audio
from edgemeta.runtime.manifest import Clip, read_manifest, write_manifest
from edgemeta.runtime.text import normalize_text
from edgemeta.splits import LANGUAGE_PARTS, select_languages
from edgemeta.word_frequencies import common_words

TRAINING_ENGINES = ("espeak-ng", "festival")
OPEN_VOCABULARY = "open"
VOCABULARIES = (OPEN_VOCABULARY, *NARROW_VOCABULARIES)
ENGINES = (*TRAINING_ENGINES, "flite")
ENGINE_BINARIES = {"espeak-ng": "espeak-ng", "festival": "festival", "flite": "flite"}
ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts", "flite": "flite"}
# Speakers per engine are allotted in these proportions: festival has three voices, espeak-ng hundreds of combinations.
ENGINE_WEIGHTS = {"espeak-ng": 4, "festival": 1, "flite": 1}

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Variants that do not sound like a person talking to a recognizer (whispers, robots, effects).
ESPEAK_EXCLUDED_VARIANTS = frozenset({"whisper", "whisperf", "croak", "Demonic", "UniRobot", "anikaRobot"})
ESPEAK_PITCHES = (25, 30, 35, 40, 45, 50, 55, 60, 65, 70)
ESPEAK_RATES = (130, 140, 150, 160, 170, 180, 190)

FESTIVAL_VOICES = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}
FESTIVAL_DIPHONE_F0 = (85, 95, 105, 120, 135)  # target mean F0 in Hz; the HTS voice has no such control
FESTIVAL_RATES = (0.85, 0.95, 1.0, 1.1, 1.2)

FLITE_VOICES = ("rms", "awb")
FLITE_RATES = (1.0, 0.9, 1.1)

SYNTHESIS_TIMEOUT_S = 60


class SynthesisError(RuntimeError):
    """A synthesizer that is missing or failed; the message names the voice and the problem."""


@dataclass(frozen=True)
class VoiceSpec:
    """One synthetic speaker.

    ``pitch``: espeak-ng's 0-99 scale, or festival diphone voices' mean F0 in Hz
    (``None`` where the engine has no control). ``rate``: espeak-ng words per
    minute, or a speed factor for festival and flite (1.1 = 10 % faster).
    """

    engine: str
    voice: str
    pitch: int | None = None
    rate: float = 1.0
    variant: str = ""

    @property
    def speaker_id(self) -> str:
        """Stable name, e.g. ``espeak-en-us+m3-p40-s160``, ``festival-kal-p105-s1.1``, ``flite-rms``."""
        if self.engine == "espeak-ng":
            return f"espeak-{self.voice}+{self.variant}-p{self.pitch}-s{self.rate:g}"
        if self.engine == "festival":
            pitch = f"-p{self.pitch}" if self.pitch is not None else ""
            return f"festival-{FESTIVAL_VOICES[self.voice]}{pitch}-s{self.rate:g}"
        return f"flite-{self.voice}" + (f"-s{self.rate:g}" if self.rate != 1.0 else "")

    @property
    def language(self) -> str:
        """ISO 639-1 code of what the voice speaks: an espeak-ng voice's language (``es``, ``en-gb`` → ``en``), else ``en``."""
        return self.voice.split("-")[0] if self.engine == "espeak-ng" else "en"


def require_engine(engine: str) -> None:
    """Raise :class:`SynthesisError` when ``engine`` is unknown or its program is not installed."""
    if engine not in ENGINE_BINARIES:
        raise SynthesisError(f"unknown synthesis engine {engine!r}; choose from {', '.join(ENGINES)}")
    if shutil.which(ENGINE_BINARIES[engine]) is None:
        raise SynthesisError(
            f"{ENGINE_BINARIES[engine]} not found on PATH: engine {engine} needs the Debian package(s) "
            f"{ENGINE_PACKAGES[engine]}"
        )


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Voice variants installed with espeak-ng (``espeak-ng --voices=variant``), minus the non-human ones."""
    require_engine("espeak-ng")
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    files = (line.split()[4] for line in listing.splitlines()[1:] if len(line.split()) >= 5)
    names = {path.rsplit("/", 1)[-1] for path in files}
    return tuple(sorted(names - ESPEAK_EXCLUDED_VARIANTS))


def speaker_variant(speaker_id: str) -> str | None:
    """The espeak-ng variant of a speaker id such as ``espeak-en-us+m3-p40-s160`` (``m3``); ``None`` for other ids."""
    if not speaker_id.startswith("espeak-") or "+" not in speaker_id:
        return None
    return speaker_id.split("+", 1)[1].rsplit("-p", 1)[0]


def trained_variants(model: str | Path) -> frozenset[str]:
    """espeak-ng variants of the training speakers recorded in a bundle (folder or archive) or a checkpoint, or of a manifest's speakers."""
    from edgemeta.checkpoint import load_checkpoint
    from edgemeta.runtime.bundle import is_archive, load_bundle

    path = Path(model)
    if path.suffix == ".jsonl":
        speakers = [clip.speaker for clip in read_manifest(path)]
    elif path.is_dir() or is_archive(path):
        speakers = load_bundle(path).training_speakers
    else:
        speakers = load_checkpoint(path).get("training_speakers") or []
    return frozenset(v for v in map(speaker_variant, speakers) if v is not None)


def _variants(excluded: frozenset[str]) -> tuple[str, ...]:
    return tuple(v for v in espeak_variants() if v not in excluded)


def _draw_voice(engine: str, index: int, rng: random.Random, excluded_variants: frozenset[str]) -> VoiceSpec:
    """The ``index``-th speaker of ``engine``: voices taken in turn, pitch/rate/variant drawn."""
    if engine == "espeak-ng":
        return VoiceSpec(engine, ESPEAK_ACCENTS[index % len(ESPEAK_ACCENTS)], rng.choice(ESPEAK_PITCHES),
                         rng.choice(ESPEAK_RATES), rng.choice(_variants(excluded_variants)))
    if engine == "festival":
        voice = tuple(FESTIVAL_VOICES)[index % len(FESTIVAL_VOICES)]
        pitch = rng.choice(FESTIVAL_DIPHONE_F0) if voice.endswith("_diphone") else None
        return VoiceSpec(engine, voice, pitch, rng.choice(FESTIVAL_RATES))
    # flite: its natural voices first, then slower and faster versions of them, in a fixed order.
    rate = FLITE_RATES[(index // len(FLITE_VOICES)) % len(FLITE_RATES)]
    return VoiceSpec(engine, FLITE_VOICES[index % len(FLITE_VOICES)], None, rate)


def _allot(count: int, engines: tuple[str, ...]) -> dict[str, int]:
    """Split ``count`` speakers between engines in proportion to their weights (largest remainder)."""
    total = sum(ENGINE_WEIGHTS[e] for e in engines)
    shares = {e: count * ENGINE_WEIGHTS[e] / total for e in engines}
    allotted = {e: int(share) for e, share in shares.items()}
    for engine in sorted(engines, key=lambda e: allotted[e] - shares[e])[: count - sum(allotted.values())]:
        allotted[engine] += 1
    return allotted


def _distinct_speakers(engine: str, excluded_variants: frozenset[str]) -> int:
    if engine == "espeak-ng":
        return len(ESPEAK_ACCENTS) * len(_variants(excluded_variants)) * len(ESPEAK_PITCHES) * len(ESPEAK_RATES)
    if engine == "festival":
        return len(FESTIVAL_RATES) * (2 * len(FESTIVAL_DIPHONE_F0) + 1)
    return len(FLITE_VOICES) * len(FLITE_RATES)


def sample_speakers(n: int, seed: int, engines: tuple[str, ...] = TRAINING_ENGINES,
                    excluded_variants: frozenset[str] = frozenset()) -> list[VoiceSpec]:
    """``n`` distinct speakers drawn from ``engines`` (default espeak-ng and festival, never flite).

    ``excluded_variants``: espeak-ng variants never drawn (those a model was trained on).
    """
    engines = tuple(dict.fromkeys(engines))
    for engine in engines:
        require_engine(engine)
    rng = random.Random(seed)
    speakers: list[VoiceSpec] = []
    for engine, count in _allot(n, engines).items():
        distinct = _distinct_speakers(engine, excluded_variants)
        if count > distinct:
            raise SynthesisError(f"{engine} offers {distinct} distinct speakers; {count} were asked for")
        chosen: dict[str, VoiceSpec] = {}
        index = 0
        while len(chosen) < count:
            voice = _draw_voice(engine, index, rng, excluded_variants)
            chosen.setdefault(voice.speaker_id, voice)
            index += 1
        speakers.extend(chosen.values())
    return speakers


def language_speakers(languages: list[str], per_language: int, seed: int,
                      excluded_variants: frozenset[str] = frozenset()) -> list[VoiceSpec]:
    """``per_language`` espeak-ng speakers of each language, each a different variant with its own pitch and rate.

    A language's speakers are drawn from ``seed`` and the language alone, so
    they are the same whichever other languages are asked for.
    """
    require_engine("espeak-ng")
    variants = _variants(excluded_variants)
    if per_language > len(variants):
        raise SynthesisError(f"espeak-ng offers {len(variants)} variants; {per_language} speakers per language were asked for")
    speakers = []
    for language in languages:
        rng = random.Random(f"{seed}/{language}")
        speakers += [VoiceSpec("espeak-ng", language, rng.choice(ESPEAK_PITCHES), rng.choice(ESPEAK_RATES), variant)
                     for variant in rng.sample(variants, per_language)]
    return speakers


def _festival_settings(voice: VoiceSpec) -> list[str]:
    settings = [f"(voice_{voice.voice})"]
    if voice.pitch is not None:
        settings.append(f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})")
        settings.append(f"(set! int_lr_params (cons '(target_f0_mean {voice.pitch}) (cdr int_lr_params)))")
    else:  # the HTS voice ignores Duration_Stretch; hts_engine's own speed option works
        settings.append(f"(set! hts_engine_params (append hts_engine_params '((\"-r\" {voice.rate:g}))))")
    return settings


def _command(voice: VoiceSpec, wav_path: Path) -> list[str]:
    """Command line that reads one text on stdin and writes ``wav_path`` (espeak-ng and flite)."""
    if voice.engine == "espeak-ng":
        return ["espeak-ng", "-v", f"{voice.voice}+{voice.variant}", "-p", str(voice.pitch),
                "-s", f"{voice.rate:g}", "-w", str(wav_path), "--stdin"]
    return ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={1.0 / voice.rate:.4f}",
            "-f", "/dev/stdin", "-o", str(wav_path)]


def _festival_script(texts: list[str], voice: VoiceSpec, wav_paths: list[Path]) -> str:
    """One festival session for many texts: loading a voice costs far more than speaking a sentence."""
    lines = _festival_settings(voice)
    for text, wav_path in zip(texts, wav_paths):
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{wav_path}" \'riff)')
    return "\n".join(lines) + "\n"


def _run_synthesizer(command: list[str], stdin: str, voice: VoiceSpec, what: str) -> None:
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=SYNTHESIS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{voice.speaker_id}: {voice.engine} took over {SYNTHESIS_TIMEOUT_S} s for {what}") from None
    if result.returncode != 0:
        raise SynthesisError(f"{voice.speaker_id}: {voice.engine} failed (exit {result.returncode}) for {what}: "
                             f"{result.stderr.strip()[-300:]}")


def _read_speech(wav_path: Path, voice: VoiceSpec, text: str) -> np.ndarray:
    if not wav_path.is_file():
        raise SynthesisError(f"{voice.speaker_id}: {voice.engine} wrote no audio for {text!r}")
    audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    if audio.shape[0] == 0 or not np.abs(audio).max() > 0:
        raise SynthesisError(f"{voice.speaker_id}: {voice.engine} produced silence for {text!r}")
    return resample(audio.mean(axis=1), rate, SAMPLE_RATE)


def synthesize_many(texts: list[str], voice: VoiceSpec) -> list[np.ndarray]:
    """Speak each text with ``voice``; mono float32 at 16 kHz (the runtime's resampler)."""
    require_engine(voice.engine)
    with tempfile.TemporaryDirectory(prefix="edgemeta-synth-") as folder:
        wav_paths = [Path(folder) / f"{i:04d}.wav" for i in range(len(texts))]
        if voice.engine == "festival":
            script = Path(folder) / "speak.scm"
            script.write_text(_festival_script(texts, voice, wav_paths), encoding="utf-8")
            _run_synthesizer(["festival", "--batch", str(script)], "", voice, f"{len(texts)} texts")
        else:
            for text, wav_path in zip(texts, wav_paths):
                _run_synthesizer(_command(voice, wav_path), text, voice, repr(text))
        return [_read_speech(wav_path, voice, text) for text, wav_path in zip(texts, wav_paths)]


def synthesize(text: str, voice: VoiceSpec) -> np.ndarray:
    """Speak ``text`` with ``voice``; mono float32 at 16 kHz (the runtime's resampler)."""
    return synthesize_many([text], voice)[0]


@dataclass(frozen=True)
class _SpeakerJob:
    """All clips of one speaker: one synthesizer session, one channel condition.

    ``texts`` are what the synthesizer reads; each clip's transcript is its
    text normalised (the same text for English prompts, which come normalised).
    """

    speaker_index: int
    speaker: str
    voice: VoiceSpec
    condition: ChannelCondition | None
    texts: list[str]
    audio_paths: list[Path]
    labels: dict[str, str]


def _speaker_job(out_dir: Path, seed: int, speaker_index: int, speaker: str, voice: VoiceSpec, clips: int, conditions: bool,
                 prompt: Callable[[random.Random], str], labels: dict[str, str]) -> _SpeakerJob:
    """Speaker ``speaker_index``'s condition and ``clips`` prompts, drawn from the seed and its speaker id."""
    condition = ChannelCondition.sample(np.random.default_rng([seed, speaker_index, 0, 0])) if conditions else None
    text_rng = random.Random(f"{seed}/{speaker}")
    texts = [prompt(text_rng) for _ in range(clips)]
    audio_paths = [out_dir / "audio" / speaker / f"{i:04d}.wav" for i in range(clips)]
    return _SpeakerJob(speaker_index, speaker, voice, condition, texts, audio_paths, labels)


def _render(job: _SpeakerJob, seed: int) -> list[Clip]:
    extra = {
        "engine": job.voice.engine,
        "voice": {k: v for k, v in asdict(job.voice).items() if k != "engine"},
        "condition": asdict(job.condition) if job.condition is not None else None,
        **job.labels,
    }
    clips = []
    for clip_index, (speech, text, audio_path) in enumerate(zip(synthesize_many(job.texts, job.voice), job.texts, job.audio_paths)):
        audio = peak_normalize(speech)
        if job.condition is not None:
            audio = job.condition.apply(audio, np.random.default_rng([seed, job.speaker_index, clip_index, 1]))
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(audio_path, audio)
        clips.append(Clip(audio_path, normalize_text(text), job.speaker, extra))
    return clips


def synthesize_corpus(
    out_dir: str | Path,
    speakers: int = 20,
    clips: int = 10,
    seed: int = 0,
    engines: tuple[str, ...] = TRAINING_ENGINES,
    conditions: bool = True,
    workers: int = 2,
    excluded_variants: frozenset[str] = frozenset(),
    vocabulary: str = OPEN_VOCABULARY,
) -> Path:
    """Write ``speakers`` × ``clips`` 16 kHz WAVs and ``manifest.jsonl`` under ``out_dir``; return the manifest.

    Each speaker gets one channel condition (``conditions=False``: clean audio)
    and its own prompts: open English ones, or only those of a narrow
    ``vocabulary`` (``digits``, ``commands``; its speaker ids end in
    ``-<vocabulary>``). ``excluded_variants`` as in :func:`sample_speakers`.
    A speaker whose synthesis fails is reported on stderr and left out; the
    run fails only if none succeeds.
    """
    if vocabulary not in VOCABULARIES:
        raise SynthesisError(f"unknown vocabulary {vocabulary!r}; choose from {', '.join(VOCABULARIES)}")
    out_dir = Path(out_dir)
    prompt = partial(generate_prompt, extra_words=load_dictionary()) if vocabulary == OPEN_VOCABULARY else NARROW_VOCABULARIES[vocabulary]
    suffix = "" if vocabulary == OPEN_VOCABULARY else f"-{vocabulary}"
    labels = {"language": "en", **({"vocabulary": vocabulary} if suffix else {})}
    jobs = [_speaker_job(out_dir, seed, index, voice.speaker_id + suffix, voice, clips, conditions, prompt, labels)
            for index, voice in enumerate(sample_speakers(speakers, seed, engines, excluded_variants))]
    return _write_corpus(out_dir, jobs, seed, workers)


def synthesize_language_corpus(
    out_dir: str | Path,
    languages: list[str],
    speakers_per_language: int = 2,
    clips: int = 10,
    seed: int = 0,
    conditions: bool = True,
    workers: int = 2,
    excluded_variants: frozenset[str] = frozenset(),
) -> Path:
    """espeak-ng speakers of ``languages`` (ISO 639-1) reading sentences of their language's common words; returns the manifest.

    Speakers as :func:`language_speakers`; each reads ``clips`` sentences of
    4-8 words from wordfreq's 2,000 most frequent words of its language
    (:func:`edgemeta.word_frequencies.common_words`), spoken as the language
    writes them, transcribed folded to the vocabulary. Conditions and failures
    as in :func:`synthesize_corpus`.
    """
    out_dir = Path(out_dir)
    jobs = []
    for index, voice in enumerate(language_speakers(languages, speakers_per_language, seed, excluded_variants)):
        words = common_words(voice.language)
        jobs.append(_speaker_job(out_dir, seed, index, voice.speaker_id, voice, clips, conditions,
                                 partial(word_sentence, words=words), {"language": voice.language}))
    return _write_corpus(out_dir, jobs, seed, workers)


def _write_corpus(out_dir: Path, jobs: list[_SpeakerJob], seed: int, workers: int) -> Path:
    """Render the speakers (``workers`` synthesizers at a time) and write their manifest; failed speakers are skipped."""
    written: list[Clip] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=sum(len(job.texts) for job in jobs), desc="synthesizing", unit="clip", file=sys.stderr) as progress:
        futures = [pool.submit(_render, job, seed) for job in jobs]
        for job, future in zip(jobs, futures):
            try:
                written.extend(future.result())
            except SynthesisError as error:
                failures.append(str(error))
                print(f"skipped speaker {job.speaker}: {error}", file=sys.stderr)
            progress.update(len(job.texts))
    if not written:
        raise SynthesisError(f"no clip could be synthesized into {out_dir}; first error: {failures[0]}")
    manifest = out_dir / "manifest.jsonl"
    write_manifest(manifest, written)
    return manifest


EXAMPLES = """\
examples:
  # training speakers (espeak-ng and festival), each with its own room, noise and level
  edgemeta synth --out data/synth --speakers 40 --clips 20 --seed 0
  # the unseen evaluation voices (flite rms and awb), clean
  edgemeta synth --out data/flite --engine flite --speakers 2 --clips 20 --no-effects
  # espeak-ng speakers whose variants none of a model's training speakers used
  edgemeta synth --out data/espeak-unseen --engine espeak-ng --speakers 8 --clips 20 --no-effects --unseen-by runtime/builtin

  # other languages: 3 espeak-ng speakers of every train language of edgemeta/splits/languages.json
  edgemeta synth --out data/languages-train --languages train --speakers-per-language 3 --clips 20 --no-effects
  edgemeta synth --out data/languages-test --languages test --speakers-per-language 2 --clips 20 --no-effects
  edgemeta synth --out data/es-fr --languages es,fr --speakers-per-language 2 --clips 25

  # narrow vocabulary: English espeak-ng speakers reading only digit strings ("three one four seven")
  edgemeta synth --out data/digits-train --vocabulary digits --engine espeak-ng --speakers 40 --clips 20 --no-effects
  # dev digit speakers: no variant the training digit speakers used (--unseen-by also reads a manifest)
  edgemeta synth --out data/digits-dev --vocabulary digits --engine espeak-ng --speakers 6 --clips 20 --no-effects \\
      --seed 1 --unseen-by data/digits-train/manifest.jsonl
  # device commands ("turn on the lights")
  edgemeta synth --out data/commands --vocabulary commands --engine espeak-ng --speakers 10 --clips 20
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta synth``."""
    parser = subparsers.add_parser(
        "synth",
        help="synthesize a multi-speaker corpus (WAVs + manifest.jsonl)",
        description="Synthesize a multi-speaker corpus with generated prompts, deterministic from --seed: open English, "
        "a narrow vocabulary (--vocabulary), or espeak-ng voices of other languages (--languages; every clip records its "
        "language). flite (voices rms, awb) is only used when asked for: it holds the unseen evaluation voices.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (audio/ and manifest.jsonl)")
    parser.add_argument("--speakers", type=int, default=20, help="number of speakers (default 20)")
    parser.add_argument("--clips", type=int, default=10, help="clips per speaker (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed for speakers, prompts and effects (default 0)")
    parser.add_argument("--engine", action="append", choices=ENGINES, dest="engines",
                        help="synthesizer to draw speakers from; repeat for several (default: espeak-ng and festival)")
    parser.add_argument("--no-effects", action="store_true", help="clean audio: no noise, reverberation, band limit or gain")
    parser.add_argument("--workers", type=int, default=2, help="parallel synthesizer processes (default 2)")
    parser.add_argument("--unseen-by", type=Path, action="append", default=[], metavar="MODEL",
                        help="a bundle, checkpoint or manifest: draw no espeak-ng variant its (training) speakers used (repeatable)")
    parser.add_argument("--vocabulary", choices=VOCABULARIES, default=OPEN_VOCABULARY,
                        help="what the speakers read: open English prompts (default), only digit strings, or only device commands")
    parser.add_argument("--languages", metavar="|".join(LANGUAGE_PARTS) + "|CODES",
                        help="espeak-ng speakers of other languages instead: a part of edgemeta/splits/languages.json "
                             "or comma-separated ISO 639-1 codes (es,fr); --speakers and --engine do not apply")
    parser.add_argument("--speakers-per-language", type=int, default=2, metavar="N", help="with --languages: speakers of each language (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``edgemeta synth`` from parsed arguments."""
    started = time.perf_counter()
    if args.languages is not None and (args.engines or args.vocabulary != OPEN_VOCABULARY):
        print("edgemeta synth: --languages speaks each language's own words with espeak-ng: it takes no --engine or --vocabulary",
              file=sys.stderr)
        return 1
    try:
        languages = select_languages(args.languages) if args.languages is not None else None
    except ValueError as error:
        print(f"edgemeta synth: --languages: {error}", file=sys.stderr)
        return 1
    try:
        excluded = frozenset().union(*(trained_variants(model) for model in args.unseen_by))
    except (OSError, ValueError) as error:  # a missing or unreadable bundle/checkpoint/manifest, named in the message
        print(f"edgemeta synth: --unseen-by: {error}", file=sys.stderr)
        return 1
    try:
        if languages is not None:
            manifest = synthesize_language_corpus(args.out, languages, args.speakers_per_language, args.clips, args.seed,
                                                  not args.no_effects, args.workers, excluded)
        else:
            manifest = synthesize_corpus(args.out, args.speakers, args.clips, args.seed, tuple(args.engines or TRAINING_ENGINES),
                                         not args.no_effects, args.workers, excluded, args.vocabulary)
    except SynthesisError as error:
        print(f"edgemeta synth: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    written = len(read_manifest(manifest))
    print(f"wrote {manifest}: {written} clips in {elapsed:.1f} s ({written / elapsed:.1f} clips/s)")
    return 0
