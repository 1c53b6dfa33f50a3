"""``edgemeta recipe``: the one command that rebuilds the built-in bundle, resumable at every stage.

Stages (each skipped or resumed when its output is already there):

1. synthesize training speakers (espeak-ng and festival; never flite);
2. pretrain on them plus the speechocean762-train speakers outside the committed dev and test split
   (``whisper-tiny.en``: the frozen encoder's outputs are cached first, see :mod:`edgemeta.encoder_cache`,
   and only the GRU and head train);
3. meta-train each method of the comparison from the pretrained checkpoint under an equal budget
   (:data:`~edgemeta.adaptation_methods.RECIPE_METHODS`: ``finetune`` only picks its scalar rate; the controls are opt-in);
4. build the decoder's character language model from wordfreq's English word frequencies;
5. export the Meta-SGD model with it as a bundle (and, with ``--install``, as the built-in one).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgemeta.adaptation_methods import META_TRAINING_METHODS, RECIPE_METHODS
from edgemeta.corpus import cache_root
from edgemeta.evaluation.arguments import comma_list
from edgemeta.model import BODIES, CNN_GRU, WHISPER_TINY_EN

# What differs by body. cnn-gru: DESIGN.md's budgets (pretraining <= 45 min, each method <= 15 min). whisper-tiny.en: budgets
# that keep the whole recipe within 60 min on 2 cores: run clean (empty caches) it took 47 min, synthesis 15 s and the
# encoder outputs of 3680 clips, clean and one variant, 131 s (reports/whisper/training/recipe-clean-run.txt). Its
# synthetic speakers, rate cap, beam and decoder weights were chosen on the dev speakers and dev voices
# (reports/whisper/dev/): the synthetic speakers keep real dev speakers level (0.256 vs 0.258) and cut unseen espeak-ng
# voices 0.450 -> 0.145; uncapped rates overfit the support sets; a beam of 32 prefixes against 8 cuts dev CER by 4-6 %
# (decoder-weights-beam*.json) for 11 ms per clip.
BODY_DEFAULTS: dict[str, dict] = {
    CNN_GRU: dict(synth_speakers=60, pretrain_minutes=45.0, meta_minutes=15.0, cache_variants=0),
    WHISPER_TINY_EN: dict(synth_speakers=60, pretrain_minutes=20.0, meta_minutes=6.0, cache_variants=1,
                          meta_settings={"max_rate": 0.05}, decoder_weights={"lm_weight": 0.5, "char_bonus": 1.0, "beam": 32}),
}


@dataclass
class RecipeConfig:
    """Budgets and sizes of one recipe run; :meth:`for_body` fills in a body's defaults (:data:`BODY_DEFAULTS`)."""

    body: str = CNN_GRU
    runs: Path = cache_root() / "runs" / "default"
    synth_speakers: int = 60
    synth_clips: int = 25
    synth_seed: int = 1
    pretrain_minutes: float = 45.0
    meta_minutes: float = 15.0
    cache_variants: int = 0
    meta_settings: dict = field(default_factory=dict)  # MetaTrainConfig fields that differ from its defaults
    decoder_weights: dict = field(default_factory=dict)  # DecoderSettings fields that differ from its defaults
    methods: tuple[str, ...] = RECIPE_METHODS
    threads: int = 2
    install: bool = False

    @classmethod
    def for_body(cls, body: str, **given) -> "RecipeConfig":
        """``body``'s defaults, overridden by the ``given`` values that are not ``None``; runs under ``runs/<body>`` except cnn-gru's."""
        runs = cache_root() / "runs" / ("default" if body == CNN_GRU else body)
        return cls(body=body, **{"runs": runs, **BODY_DEFAULTS[body], **{k: v for k, v in given.items() if v is not None}})


def synth_stage(config: RecipeConfig) -> list[Path]:
    """The synthetic training corpus, if the recipe has synthetic speakers (kept between runs: deterministic from the seed)."""
    from edgemeta.synth import synthesize_corpus

    if not config.synth_speakers:
        return []
    manifest = config.runs / "synth-train" / "manifest.jsonl"
    if not manifest.is_file():
        synthesize_corpus(manifest.parent, config.synth_speakers, config.synth_clips, config.synth_seed)
    return [manifest]


def pretrain_stage(config: RecipeConfig, manifests: list[Path]) -> Path:
    """Pretraining (resumes from its last checkpoint; a whisper body first builds or loads its encoder cache)."""
    from edgemeta.train import TrainConfig, train

    return train(TrainConfig(manifests=[str(m) for m in manifests], out=str(config.runs / "pretrain"),
                             minutes=config.pretrain_minutes, threads=config.threads, model={"body": config.body},
                             cache_variants=config.cache_variants))


def meta_stage(config: RecipeConfig, pretrained: Path, method: str) -> Path:
    """Meta-training (or, for ``finetune``, scalar-rate selection) of one method."""
    from edgemeta.checkpoint import load_checkpoint
    from edgemeta.meta_train import MetaTrainConfig, load_tasks, meta_train

    meta_config = MetaTrainConfig(init=str(pretrained), out=str(config.runs / method), method=method,
                                  minutes=config.meta_minutes, threads=config.threads, **config.meta_settings)
    train_tasks, dev_tasks, sources = load_tasks(meta_config)
    meta_train(meta_config, load_checkpoint(pretrained), train_tasks, dev_tasks, sources)
    return config.runs / method / "last.pt"


def language_model_stage(config: RecipeConfig) -> Path:
    """The decoder's character language model, from wordfreq's English word frequencies (kept between runs)."""
    from edgemeta.word_frequencies import english_model

    path = config.runs / "lm.npz"
    if not path.is_file():
        english_model().save(path)
    return path


def export_stage(config: RecipeConfig, checkpoint: Path, language_model: Path) -> Path:
    """The Meta-SGD bundle with the language model; copied over the built-in one with ``install``."""
    from edgemeta.export.bundle_writer import DecoderSettings, write_bundle
    from edgemeta.runtime.bundle import BUILTIN_BUNDLE

    bundle = config.runs / "bundle"
    write_bundle(checkpoint, bundle, int8=True, decoder=DecoderSettings(language_model, **config.decoder_weights))
    if config.install:
        shutil.rmtree(BUILTIN_BUNDLE, ignore_errors=True)
        shutil.copytree(bundle, BUILTIN_BUNDLE)
        print(f"installed {bundle} as the built-in bundle ({BUILTIN_BUNDLE})")
    return bundle


def run_recipe(config: RecipeConfig) -> Path:
    """All stages in order; returns the bundle directory."""
    pretrained = pretrain_stage(config, synth_stage(config))
    checkpoints = {method: meta_stage(config, pretrained, method) for method in config.methods}
    return export_stage(config, checkpoints.get("meta-sgd", pretrained), language_model_stage(config))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``edgemeta recipe``."""
    defaults = RecipeConfig()

    def by_body(setting: str) -> str:
        return ", ".join(f"{values[setting]:g} for {name}" for name, values in BODY_DEFAULTS.items())

    parser = subparsers.add_parser(
        "recipe",
        help="rebuild the built-in bundle: synthesize, pretrain, meta-train every method, export (resumable)",
        description=__doc__,
        epilog="examples:\n  edgemeta recipe                       # the default recipe: pretraining 45 min, each method 15 min\n"
               "  edgemeta recipe --install             # ... and make the result the built-in bundle\n"
               "  edgemeta recipe --body whisper-tiny.en # whisper's frozen encoder (cached outputs), GRU + head: 20 min, then 6 min per method;\n"
               "                                        # 47 min in all on 2 cores from empty caches\n"
               "  edgemeta recipe --pretrain-minutes 5 --meta-minutes 1 --methods meta-sgd --runs /tmp/quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--body", choices=BODIES, default=CNN_GRU, help="the recognizer's body (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=None,
                        help=f"folder of the stages' outputs (default: {defaults.runs} for cnn-gru, else {defaults.runs.parent}/BODY)")
    parser.add_argument("--pretrain-minutes", type=float, default=None,
                        help=f"pretraining budget (default: {by_body('pretrain_minutes')})")
    parser.add_argument("--meta-minutes", type=float, default=None,
                        help=f"budget of each meta-training method (default: {by_body('meta_minutes')})")
    parser.add_argument("--cache-variants", type=int, default=None,
                        help=f"{WHISPER_TINY_EN}: augmented variants cached per training clip besides the clean one "
                             f"(default: {BODY_DEFAULTS[WHISPER_TINY_EN]['cache_variants']})")
    parser.add_argument("--methods", type=_methods, default=defaults.methods,
                        help=f"comma-separated, from {', '.join(META_TRAINING_METHODS)} (default: {','.join(defaults.methods)})")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--install", action="store_true", help="copy the exported bundle over the built-in one")
    parser.set_defaults(func=_run)


def _methods(value: str) -> tuple[str, ...]:
    methods = tuple(comma_list(value))
    unknown = [m for m in methods if m not in META_TRAINING_METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"not a meta-training method: {', '.join(unknown)} (choose from {', '.join(META_TRAINING_METHODS)})")
    return methods


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = RecipeConfig.for_body(args.body, runs=args.runs, pretrain_minutes=args.pretrain_minutes, meta_minutes=args.meta_minutes,
                                   cache_variants=args.cache_variants, methods=args.methods, threads=args.threads, install=args.install)
    print(run_recipe(config))
    return 0
