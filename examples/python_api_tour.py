#!/usr/bin/env python3
"""The edgemeta Python API end to end, in one script: synthesize -> train -> export -> enroll -> transcribe.

1. synthesize a small corpus of espeak-ng speakers (``edgemeta.synth.synthesize_corpus``)
   and hold one speaker out of training;
2. train a tiny recognizer for ``--steps`` steps (``edgemeta.train.train``);
3. export it as a bundle, the only thing a device receives
   (``edgemeta.export.bundle_writer.write_bundle``);
4. on the "device" side, enroll the held-out speaker on a few clips
   (``edgemeta.runtime.adapter.Adapter``: clip checks, guard, gradient steps on the head);
5. transcribe the speaker's other clips with the base head and with the adapted
   head (``edgemeta.runtime.recognizer.Recognizer``) and print CER before and after.

The model is tiny and trained for a minute on a few dozen clips, and it is
exported from plain pretraining (one scalar adaptation rate) rather than
meta-training: its transcripts are mostly wrong and its CER numbers mean
nothing. The script shows how the pieces fit together; for real numbers run
``bash scripts/demo.sh`` on the built-in bundle, or ``edgemeta recipe`` for
a full model (pretraining + ``edgemeta meta-train`` + export).

Everything is written under ``--out``: ``corpus/`` (audio and manifests),
``train/`` (checkpoints; a second run with a larger ``--steps`` continues
training from ``train/last.pt``) and ``bundle/``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from edgemeta.export.bundle_writer import write_bundle
from edgemeta.runtime.adapter import Adapter, Enrollment, EnrollmentClip
from edgemeta.runtime.audio import read_audio
from edgemeta.runtime.bundle import Bundle, load_bundle
from edgemeta.runtime.manifest import Clip, read_manifest, write_manifest
from edgemeta.runtime.metrics import ErrorCounts, score
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import normalize_text
from edgemeta.synth import synthesize_corpus
from edgemeta.train import TrainConfig, train

# 78 k parameters, about 1/28 of the default ModelConfig: about ten steps a second on one CPU core.
TOUR_MODEL = dict(n_mels=40, channels=64, blocks=2, kernel_size=5, expansion=2, gru_hidden=64)

EXAMPLES = """\
examples:
  # the whole tour with its defaults (about 1-2 minutes on 2 CPU cores)
  python examples/python_api_tour.py --out /tmp/edgemeta-tour

  # train longer (continues from /tmp/edgemeta-tour/train/last.pt), more clips per speaker
  python examples/python_api_tour.py --out /tmp/edgemeta-tour --steps 1500 --clips 12

  # smoke test: a handful of steps
  python examples/python_api_tour.py --out /tmp/edgemeta-smoke --steps 3 --clips 4 --k 2
"""


def get_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("edgemeta-tour"), help="working folder (default: ./edgemeta-tour)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    parser.add_argument("--speakers", type=int, default=2, help="espeak-ng training speakers; one more is synthesized and held out (default 2)")
    parser.add_argument("--clips", type=int, default=8, help="clips per speaker (default 8)")
    parser.add_argument("--k", type=int, default=4, help="of the held-out speaker's clips, how many enroll it; the rest are transcribed (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of speakers, prompts and training (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and onnxruntime (default 1)")
    args = parser.parse_args()
    if not 0 < args.k < args.clips:
        parser.error(f"--k must be between 1 and --clips - 1 ({args.clips - 1})")
    return args


def create_corpus(args: argparse.Namespace) -> tuple[Path, list[Clip]]:
    """Synthesize ``--speakers`` + 1 speakers; return a training manifest without the last one, and that speaker's clips."""
    corpus = args.out / "corpus"
    manifest = synthesize_corpus(corpus, speakers=args.speakers + 1, clips=args.clips, seed=args.seed,
                                 engines=("espeak-ng",), conditions=False)
    clips = read_manifest(manifest)
    held_out = clips[-1].speaker
    train_manifest = corpus / "train.jsonl"
    write_manifest(train_manifest, [c for c in clips if c.speaker != held_out])
    return train_manifest, [c for c in clips if c.speaker == held_out]


def create_checkpoint(args: argparse.Namespace, train_manifest: Path) -> Path:
    """Train the tiny model on the training manifest; return its last checkpoint."""
    config = TrainConfig(
        manifests=[str(train_manifest)],
        speechocean=False,  # only the synthetic speakers, even where ../shared/data holds speechocean762
        out=str(args.out / "train"),
        minutes=60.0,  # the step budget ends the run, not the clock
        max_steps=args.steps,
        lr=3e-3,
        warmup_steps=10,
        batch_seconds=10.0,  # small batches: more updates for the same compute, to get past CTC's all-blank stage sooner
        augment=False,
        spec_augment=False,
        seed=args.seed,
        threads=args.threads,
        model=TOUR_MODEL,
    )
    return train(config)


def create_bundle(checkpoint: Path, out: Path) -> Bundle:
    """Export ``checkpoint`` to the bundle directory ``out`` and open it as a device would."""
    write_bundle(checkpoint, out, progress=lambda message: print(f"  {message}"))
    return load_bundle(out)


def enroll(bundle: Bundle, clips: list[Clip], threads: int) -> Enrollment:
    """Adapt the bundle's head to the speaker of ``clips`` (the same steps as ``edgemeta-runtime enroll``)."""
    enrollment = [EnrollmentClip(c.audio.name, read_audio(c.audio, bundle.sample_rate), c.text) for c in clips]
    return Adapter(bundle, threads=threads).enroll(enrollment)


def transcribe_and_score(recognizer: Recognizer, clips: list[Clip]) -> ErrorCounts:
    """Transcribe ``clips`` with the recognizer's current head and score them against their transcripts."""
    transcripts = recognizer.transcribe([read_audio(c.audio, recognizer.bundle.sample_rate) for c in clips])
    for clip, transcript in zip(clips, transcripts):
        print(f"     {clip.audio.name}: {transcript.text!r}  (reference {normalize_text(clip.text)!r})")
    return score([normalize_text(c.text) for c in clips], [t.text for t in transcripts])


def main() -> None:
    """Run the tour and print what each step did."""
    args = get_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    print(f"1. synthesizing {args.speakers + 1} espeak-ng speakers x {args.clips} clips into {args.out / 'corpus'}")
    train_manifest, held_out = create_corpus(args)
    speaker = held_out[0].speaker
    print(f"   training on {train_manifest}; holding out {speaker}")
    timings["synthesize"] = time.perf_counter() - started

    print(f"2. training a tiny model for {args.steps} steps")
    checkpoint = create_checkpoint(args, train_manifest)
    timings["train"] = time.perf_counter() - started - sum(timings.values())

    print(f"3. exporting {checkpoint} as a bundle")
    bundle = create_bundle(checkpoint, args.out / "bundle")
    timings["export"] = time.perf_counter() - started - sum(timings.values())

    enrollment_clips, scored_clips = held_out[: args.k], held_out[args.k :]
    print(f"4. enrolling {speaker} on {len(enrollment_clips)} clips (up to {bundle.inner_steps} steps, "
          f"{bundle.adaptation['rates']} rates)")
    result = enroll(bundle, enrollment_clips, args.threads)
    for name, reason in result.clips_left_out:
        print(f"   left out {name}: {reason}")
    if result.guard is not None:
        print(f"   guard ({result.guard.rule}): {'accepted' if result.guard.accepted else 'refused'}: {result.guard.reason}")
    print(f"   {result.decision}")
    timings["enroll"] = time.perf_counter() - started - sum(timings.values())

    print(f"5. transcribing {len(scored_clips)} other clips of {speaker}")
    recognizer = Recognizer(bundle, threads=args.threads)
    print("   base head:")
    before = transcribe_and_score(recognizer, scored_clips)
    recognizer.set_head(result.weights)
    print(f"   {'adapted' if result.adapted else 'base (enrollment kept it)'} head:")
    after = transcribe_and_score(recognizer, scored_clips)
    timings["transcribe"] = time.perf_counter() - started - sum(timings.values())

    print()
    print(f"CER before enrollment: {before.cer:.3f}   (WER {before.wer:.3f})")
    print(f"CER after enrollment:  {after.cer:.3f}   (WER {after.wer:.3f})")
    print(f"A {args.steps}-step toy model: these numbers only show that the API works end to end.")
    print("time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items()))


if __name__ == "__main__":
    main()
