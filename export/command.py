"""``edgemeta export CHECKPOINT OUT``: write a device bundle (also ``python -m edgemeta.export``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgemeta.runtime.ctc_decode import BeamSearch

EXAMPLES = """\
examples:
  edgemeta export runs/meta-sgd/last.pt bundles/mine
  edgemeta export runs/meta-sgd/last.pt bundles/mine --int8 --archive
  edgemeta export runs/meta-sgd/last.pt bundles/mine --parity-manifest data/flite/manifest.jsonl
  edgemeta lm --out runs/lm.npz && edgemeta export runs/meta-sgd/last.pt bundles/mine --lm runs/lm.npz
  edgemeta-runtime --bundle bundles/mine verify
"""
PARITY_MANIFEST_CLIPS = 8


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the export arguments to ``parser`` and set ``func``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint written by train / meta-train")
    parser.add_argument("out", metavar="OUT", help="bundle directory to write (an earlier bundle there is replaced)")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (body int8, head fp32)")
    parser.add_argument("--no-parity", dest="parity", action="store_false", help="skip the onnxruntime-vs-PyTorch parity check")
    parser.add_argument("--archive", action="store_true", help="also write OUT.tar.gz, a single-file copy of the bundle")
    parser.add_argument(
        "--parity-manifest", metavar="MANIFEST",
        help=f"JSONL manifest or folder whose first {PARITY_MANIFEST_CLIPS} clips join the synthetic parity clips",
    )
    parser.add_argument("--lm", type=Path, metavar="FILE", help="character language model from `edgemeta lm`: the bundle decodes with beam search")
    parser.add_argument("--lm-weight", type=float, default=BeamSearch.lm_weight, help="with --lm: weight of the language model's log-probability (default: %(default)s)")
    parser.add_argument("--char-bonus", type=float, default=BeamSearch.char_bonus, help="with --lm: score added per character, against short transcripts (default: %(default)s)")
    parser.add_argument("--beam", type=int, default=BeamSearch.beam, help="with --lm: prefixes kept per frame (default: %(default)s)")
    parser.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta export``."""
    parser = subparsers.add_parser(
        "export",
        help="write a device bundle (ONNX + TorchScript head + learned rates) from a checkpoint",
        description="Export a checkpoint as a bundle directory the device runtime loads, checking parity by default.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)


def run(args: argparse.Namespace) -> int:
    """Write the bundle; exit 1 on a parity failure, 2 on unreadable inputs."""
    from edgemeta.export.bundle_writer import DecoderSettings, write_bundle
    from edgemeta.runtime.language_model import LanguageModelError
    from edgemeta.export.parity import ParityError
    from edgemeta.runtime.audio import AudioError, read_audio
    from edgemeta.runtime.manifest import ManifestError, read_clips

    try:
        clips = []
        if args.parity_manifest:
            clips = [read_audio(clip.audio) for clip in read_clips(args.parity_manifest)[:PARITY_MANIFEST_CLIPS]]
        decoder = None if args.lm is None else DecoderSettings(args.lm, args.lm_weight, args.char_bonus, args.beam)
        write_bundle(args.checkpoint, args.out, int8=args.int8, check_parity=args.parity, archive=args.archive,
                     parity_clips=clips, decoder=decoder)
    except ParityError as error:
        print(f"error: {error}; {args.out} was not written", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ManifestError, AudioError, LanguageModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
