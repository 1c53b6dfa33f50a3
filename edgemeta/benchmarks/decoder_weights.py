"""Choose the beam search's language-model weight and character bonus on dev speakers, then measure them on held-out clips.

The bundle's body and base head run once (onnxruntime) over each speaker's
clips; every grid point decodes the same log-probabilities. Weights are
chosen on the speakers' adaptation pools (``edgemeta eval``'s protocol) and
scored, with best-path decoding beside them, on their scored clips, which
the choice never saw. Example::

    python -m edgemeta.benchmarks.decoder_weights --manifest ../shared/data/speechocean762-train/manifest.jsonl \\
        --lm runs/lm.npz --json reports/decoder-weights.json

Then ``edgemeta export ... --lm runs/lm.npz --lm-weight W --char-bonus B``.
With ``--words FILE`` the grid is that of ``transcribe --words FILE`` (a
closed vocabulary, :func:`edgemeta.runtime.ctc_decode.word_list_search`)::

    python -m edgemeta.benchmarks.decoder_weights --manifest ../shared/data/fsdd-dev/manifest.jsonl \\
        --words examples/digits.txt --weights 0.25,0.5,1,2 --bonuses 1,2,3 --json reports/word-list-weights.json
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from edgemeta.benchmarks.provenance import Provenance, write_json
from edgemeta.evaluation.datasets import load_dataset
from edgemeta.runtime.bundle import BUILTIN_BUNDLE, load_bundle
from edgemeta.runtime.ctc_decode import BeamSearch, Decoder, greedy_decode, word_list_search
from edgemeta.runtime.language_model import CharNgram, read_text_counts
from edgemeta.runtime.metrics import score
from edgemeta.runtime.recognizer import Recognizer


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _rates(decode: Decoder, log_probs: list[np.ndarray], texts: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    hypotheses = [decode(lp) for lp in log_probs]
    seconds = time.perf_counter() - started
    errors = score(texts, hypotheses)
    return {"cer": round(errors.cer, 4), "wer": round(errors.wer, 4), "ms_per_clip": round(1000 * seconds / len(texts), 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUILTIN_BUNDLE, help="bundle whose model produces the log-probabilities (default: built-in)")
    parser.add_argument("--manifest", type=Path, required=True, help="dev speakers (speechocean762-train: its committed dev split)")
    decoder = parser.add_mutually_exclusive_group()
    decoder.add_argument("--lm", type=Path, help="language model .npz (default: the bundle's own)")
    decoder.add_argument("--words", type=Path, help="a word list (text file): tune the closed-vocabulary search of `transcribe --words`")
    parser.add_argument("--weights", type=_floats, default=[0.2, 0.3, 0.4, 0.5, 0.7], help="language-model weights to try")
    parser.add_argument("--bonuses", type=_floats, default=[0.0, 0.5, 1.0, 1.5], help="character bonuses to try")
    parser.add_argument("--beam", type=int, default=BeamSearch.beam)
    parser.add_argument("--json", type=Path, help="write the grid and the held-out comparison here")
    args = parser.parse_args(argv)
    provenance = Provenance()

    bundle = load_bundle(args.bundle)
    if args.lm is None and args.words is None and bundle.decoder_settings is None:
        parser.error(f"{args.bundle} has no language model: give one with --lm")
    if args.words is not None:
        base = word_list_search(read_text_counts([args.words]))
    else:
        base = BeamSearch(CharNgram.load(args.lm) if args.lm else bundle.decoder().lm)

    def search(weight: float, bonus: float) -> BeamSearch:
        return BeamSearch(base.lm, weight, bonus, args.beam, prune=base.prune, words=base.words)

    recognizer = Recognizer(bundle)
    dataset = load_dataset(args.manifest, split="dev")  # weights are a choice: dev speakers only
    tune = [u for speaker in dataset.speakers for u in speaker.pool]
    held_out = [u for speaker in dataset.speakers for u in speaker.scored]
    tune_lp = [o.log_probs for o in recognizer.infer([u.audio for u in tune])]
    held_lp = [o.log_probs for o in recognizer.infer([u.audio for u in held_out])]
    tune_texts, held_texts = [u.text for u in tune], [u.text for u in held_out]

    grid = []
    for weight, bonus in itertools.product(args.weights, args.bonuses):
        rates = _rates(search(weight, bonus), tune_lp, tune_texts)
        grid.append({"lm_weight": weight, "char_bonus": bonus, **rates})
        print(f"weight {weight:4.2f} bonus {bonus:4.2f}: CER {rates['cer']:.4f} WER {rates['wer']:.4f} ({rates['ms_per_clip']} ms/clip)", flush=True)
    best = min(grid, key=lambda g: (g["cer"], g["wer"]))
    chosen = search(best["lm_weight"], best["char_bonus"])
    result = {
        "bundle": str(args.bundle), "words": None if args.words is None else str(args.words), "dataset": dataset.name, "speakers": len(dataset.speakers),
        "tuning_clips": len(tune), "held_out_clips": len(held_out), "grid": grid,
        "chosen": {"lm_weight": best["lm_weight"], "char_bonus": best["char_bonus"], "beam": args.beam},
        "held_out": {"greedy": _rates(greedy_decode, held_lp, held_texts), "beam_lm": _rates(chosen, held_lp, held_texts)},
    }
    print(f"chosen on {len(tune)} pool clips: weight {best['lm_weight']}, bonus {best['char_bonus']}")
    print(f"held out ({len(held_out)} scored clips): greedy {result['held_out']['greedy']}, beam+LM {result['held_out']['beam_lm']}")
    if args.json:
        write_json(args.json, result, provenance)
    return result


if __name__ == "__main__":
    main()
