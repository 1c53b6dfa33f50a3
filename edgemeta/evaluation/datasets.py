"""Each manifest's speakers split by the protocol: a fixed scored set per speaker and the pool adaptation clips are drawn from."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from edgemeta.corpus import Utterance, load_corpus
from edgemeta.evaluation import EvalError
from edgemeta.runtime.manifest import ManifestError
from edgemeta.speaker_tasks import under_channel, under_condition
from edgemeta.splits import SPEECHOCEAN, dev_speakers, test_speakers

SCORED_CLIPS = 10
SPLITS = ("test", "dev")  # test: reported figures; dev: every choice (rates, decoder weights, checkpoints)


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class SpeakerClips:
    """One speaker's fixed scored clips and the pool its adaptation clips are drawn from; ``names`` by clip source."""

    speaker: str
    scored: list[Utterance]
    pool: list[Utterance]
    names: dict[str, str]

    def support(self, seed: int, k: int) -> list[Utterance]:
        """The first ``k`` pool clips in seed ``seed``'s order (nested across k)."""
        order = sorted(self.pool, key=lambda u: _rank(f"{seed}/{self.speaker}/{self.names[u.source]}"))
        return order[:k]


def split_speaker(speaker: str, utterances: list[Utterance], root: Path) -> SpeakerClips:
    """Scored set and adaptation pool of one speaker's clips (``root``: the manifest's folder, for clip names)."""
    names = {}
    for u in utterances:
        source = Path(u.source)
        names[u.source] = str(source.relative_to(root)) if source.is_relative_to(root) else str(source)
    ordered = sorted(utterances, key=lambda u: _rank(f"{speaker}/{names[u.source]}"))
    cut = len(ordered) - min(SCORED_CLIPS, len(ordered) // 2)
    return SpeakerClips(speaker, ordered[cut:], ordered[:cut], names)


@dataclass
class Dataset:
    """One manifest's speakers, split by the protocol; ``name`` is the manifest's folder name."""

    name: str
    manifest: Path
    speakers: list[SpeakerClips]
    notes: list[str] = field(default_factory=list)


def split_speakers(split: str) -> set[str]:
    """speechocean762-train speakers a ``split`` scores: ``test`` for figures that are reported, ``dev`` for choices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return test_speakers() if split == "test" else dev_speakers()


def split_note(name: str, speakers: int, split: str) -> str:
    """The note saying which of speechocean762-train's speakers are scored."""
    return (f"{name}: only the {speakers} {split} speakers of the committed split are scored "
            "(dev: choices are made on them; test: reported, never chosen on; the others trained the models)")


def load_dataset(manifest: Path, split: str = "test") -> Dataset:
    """Read a manifest and split its speakers; speechocean762-train keeps only the committed split's ``split`` speakers.

    ``split="test"`` for figures that are reported, ``"dev"`` for anything a choice is made on.
    """
    chosen = split_speakers(split)
    root = manifest.resolve().parent
    held_out = chosen if root.name == SPEECHOCEAN else None
    try:
        utterances = load_corpus(manifest, include_speakers=held_out)
    except ManifestError as error:
        raise EvalError(str(error)) from None
    notes = []
    if held_out is not None:
        notes.append(split_note(root.name, len(held_out), split))
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_speaker[u.speaker].append(u)
    speakers = []
    for speaker in sorted(by_speaker):
        if len(by_speaker[speaker]) < 2:
            notes.append(f"{root.name}: speaker {speaker} skipped (1 clip: nothing left to adapt on after scoring)")
        else:
            speakers.append(split_speaker(speaker, by_speaker[speaker], root))
    if not speakers:
        raise EvalError(f"{manifest}: no speaker with at least 2 readable clips (scored + adaptation)")
    return Dataset(root.name, manifest, speakers, notes)


def under_conditions(dataset: Dataset, conditions: int) -> Dataset:
    """``dataset`` with each speaker under its first ``conditions`` recording conditions instead of as recorded.

    Speaker ``s`` becomes ``s@1`` … ``s@N`` (:func:`~edgemeta.speaker_tasks.under_condition`:
    noise, room, 8 kHz band limit, level, one condition for all of a copy's
    clips), with the same scored clips and pool. The dataset keeps its name (the manifest's folder: the
    records' contract); the run's summary records ``conditions``.
    """
    speakers = [
        _copy(s, str(number), f"condition-{number}", partial(under_condition, speaker=s.speaker, number=number))
        for number in range(1, conditions + 1) for s in dataset.speakers
    ]
    note = f"{dataset.name}: every speaker scored under {conditions} recording condition(s) of its own, not as recorded"
    return Dataset(dataset.name, dataset.manifest, speakers, dataset.notes + [note])


def under_channels(dataset: Dataset, channels: list[str]) -> Dataset:
    """``dataset`` with each speaker through each named channel (:data:`~edgemeta.augment.CHANNELS`) instead of as recorded.

    Speaker ``s`` becomes ``s@telephone``, ``s@codec``, … (:func:`~edgemeta.speaker_tasks.under_channel`),
    with the same scored clips and pool; the dataset keeps its name, the run's summary records ``channels``.
    """
    speakers = [_copy(s, name, name, partial(under_channel, name=name)) for name in channels for s in dataset.speakers]
    note = f"{dataset.name}: every speaker scored through channel(s) {', '.join(channels)}, not as recorded"
    return Dataset(dataset.name, dataset.manifest, speakers, dataset.notes + [note])


def _copy(s: SpeakerClips, suffix: str, tag: str, through: Callable[[list[Utterance]], list[Utterance]]) -> SpeakerClips:
    """Speaker ``s@suffix``: ``s``'s scored clips and pool ``through`` a channel, clip names suffixed ``#tag``."""
    scored, pool = through(s.scored), through(s.pool)
    names = {new.source: f"{s.names[old.source]}#{tag}" for old, new in zip(s.scored + s.pool, scored + pool)}
    return SpeakerClips(f"{s.speaker}@{suffix}", scored, pool, names)
