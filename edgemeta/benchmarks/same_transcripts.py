"""Whether two bundles transcribe alike for users who never enrolled: base head, the bundle's decoder, clip by clip.

Run it when a bundle is rebuilt (a new enrollment head, new rates) to show
that nobody who has not enrolled hears a difference. Every clip of each
manifest's speakers (speechocean762-train: the split's test speakers unless
``--split dev``), transcribed by each bundle as ``edgemeta-runtime transcribe``
does. Example::

    git archive 073b476 runtime/builtin | tar -x -C /tmp/previous
    python -m edgemeta.benchmarks.same_transcripts --bundle /tmp/previous/runtime/builtin \\
        --manifest ../shared/data/speechocean762-train/manifest.jsonl --manifest ../shared/data/fsdd-dev/manifest.jsonl \\
        --json reports/whisper/enrollment/base-head-transcripts.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.evaluation.datasets import load_dataset
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, load_bundle
from edgemeta.runtime.recognizer import Recognizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle to compare with")
    parser.add_argument("--against", type=Path, default=BUILTIN_BUNDLE, help="the other bundle (default: the built-in)")
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="JSONL manifest (repeatable)")
    parser.add_argument("--split", choices=("test", "dev"), default="test", help="speechocean762-train speakers (default: test)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    provenance = Provenance()
    clips = [clip for manifest in args.manifest for speaker in load_dataset(manifest, split=args.split).speakers
             for clip in speaker.pool + speaker.scored]
    audio = [clip.audio for clip in clips]
    bundles = [load_bundle(args.bundle), load_bundle(args.against)]
    first, second = ([t.text for t in Recognizer(bundle).transcribe(audio)] for bundle in bundles)
    differing = [clip.source for clip, a, b in zip(clips, first, second) if a != b]
    result = {"bundles": {str(b.source): b.digest for b in bundles}, "manifests": [str(m) for m in args.manifest],
              "clips": len(clips), "identical": len(clips) - len(differing), "differing": differing}
    print(f"{result['identical']} of {len(clips)} transcripts identical")
    if args.json:
        write_json(args.json, result, provenance)
    return result


if __name__ == "__main__":
    main()
