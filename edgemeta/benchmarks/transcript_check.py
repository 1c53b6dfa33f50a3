"""How well enrollment's transcript check (``runtime/clip_checks.py``) separates right transcripts from wrong ones.

For every clip of each manifest's speakers (speechocean762-train: its dev
speakers only, since the threshold is chosen on it), the CTC alignment score of its own transcript ("right") and
of the next clip's transcript of the same speaker ("wrong": a misread or
mislabelled clip) under the bundle's base head; then, per threshold, the
share of right transcripts the check would leave out and of wrong ones it
would catch. Example::

    python -m edgemeta.benchmarks.transcript_check --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
        --manifest ../shared/data/fsdd-dev/manifest.jsonl --json reports/transcript-check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgemeta.benchmarks.provenance import Provenance, summary_path, write_json
from edgemeta.evaluation.datasets import load_dataset
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, load_bundle
from edgemeta.runtime.clip_checks import MISMATCH_NATS_PER_CHAR, alignment_score
from edgemeta.runtime.recognizer import Recognizer
from edgemeta.runtime.text import encode

THRESHOLDS = (-2.0, -1.0, -0.5, 0.0, 0.5)


def scores(recognizer: Recognizer, manifest: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Dataset name, alignment scores of right transcripts, of wrong ones (where the wrong text fits the frames)."""
    dataset = load_dataset(manifest, split="dev")  # the threshold is a choice: dev speakers only
    right, wrong = [], []
    for speaker in dataset.speakers:
        clips = speaker.pool + speaker.scored
        for index, (clip, output) in enumerate(zip(clips, recognizer.infer([c.audio for c in clips]))):
            right.append(alignment_score(output.log_probs, encode(clip.text)))
            other = encode(clips[(index + 1) % len(clips)].text)
            if len(other) <= len(output.log_probs):
                wrong.append(alignment_score(output.log_probs, other))
    return dataset.name, np.array(right), np.array(wrong)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUILTIN_BUNDLE, help="bundle whose base head scores the clips (default: built-in)")
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    recognizer = Recognizer(load_bundle(args.bundle))
    results = []
    print(f"| dataset | clips | threshold (nats/char) | right left out | wrong caught |   (current threshold: -{MISMATCH_NATS_PER_CHAR:g})")
    print("|---|---|---|---|---|")
    for manifest in args.manifest:
        name, right, wrong = scores(recognizer, manifest)
        for threshold in THRESHOLDS:
            row = {"dataset": name, "clips": len(right), "threshold": threshold,
                   "right_left_out": round(float(np.mean(right < threshold)), 3), "wrong_caught": round(float(np.mean(wrong < threshold)), 3)}
            results.append(row)
            print(f"| {name} | {len(right)} | {threshold:g} | {row['right_left_out']:.3f} | {row['wrong_caught']:.3f} |")
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
        write_json(summary_path(args.json), {"bundle": str(args.bundle), "manifests": [str(m) for m in args.manifest]}, provenance)
    return results


if __name__ == "__main__":
    main()
