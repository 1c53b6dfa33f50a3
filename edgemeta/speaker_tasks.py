"""Tasks (one speaker, optionally under one recording condition) and the episodes drawn from them.

A meta-learning **task** is what one device user is: a speaker's clips. An
**episode** is one draw from a task: ``k`` support clips (what enrollment
adapts on) and a disjoint query set (what the adapted head is scored or
trained on). A task may also be a speaker under one of its recording conditions
(:func:`conditioned_tasks`): one :class:`~edgemeta.augment.ChannelCondition`
applied to all of its clips alike, so that a "user" is a speaker *and* a
microphone/room, or a speaker through one of the named channels of
:data:`~edgemeta.augment.CHANNELS` (:func:`channel_tasks`: telephone, codec,
far field, ...).

Episodes are a pure function of ``(seed, step, position)``: the same seed gives
the same meta-batches in any process, on any rank, and after a resume, with no
sampler state to save.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgemeta.augment import ChannelCondition, channel
from edgemeta.corpus import Utterance
from edgemeta.splits import dev_speakers, held_out_speakers

log = logging.getLogger(__name__)
# Separate random streams, so that training episodes never coincide with the fixed (validation) ones.
_TRAINING, _META_BATCH, _FIXED = 0, 1, 2


@dataclass(frozen=True)
class Task:
    """One speaker's clips; ``name`` is the speaker id."""

    name: str
    utterances: tuple[Utterance, ...]


@dataclass
class Episode:
    """Disjoint ``support`` (adaptation) and ``query`` (scoring) clips of one task."""

    task: str
    support: list[Utterance]
    query: list[Utterance]


def _number(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def speaker_condition(speaker: str, number: int) -> ChannelCondition:
    """The ``number``-th recording condition of ``speaker``: a fixed draw of :meth:`ChannelCondition.sample`."""
    return ChannelCondition.sample(np.random.default_rng([_number(speaker), number]))


def under_condition(utterances: Sequence[Utterance], speaker: str, number: int) -> list[Utterance]:
    """``speaker``'s clips recorded under its ``number``-th condition (:func:`speaker_condition`).

    Each clip's noise and room are drawn from its source, so a clip sounds the
    same whichever list it comes in; its source gains ``#condition-N``, which
    keeps it apart from the clean clip in caches keyed by source.
    """
    return _recorded(utterances, speaker_condition(speaker, number), number, f"condition-{number}")


def under_channel(utterances: Sequence[Utterance], name: str) -> list[Utterance]:
    """The clips through the named channel (:func:`~edgemeta.augment.channel`), sources suffixed ``#name``.

    As in :func:`under_condition`, each clip's noise and room are drawn from its
    source (and the channel's name), so a clip sounds the same whichever list it comes in.
    """
    return _recorded(utterances, channel(name), _number(name), name)


def _recorded(utterances: Sequence[Utterance], condition: ChannelCondition, stream: int, tag: str) -> list[Utterance]:
    """Each clip under ``condition`` with a generator seeded by ``(its source, stream)``; its source gains ``#tag``."""
    return [
        replace(u, audio=condition.apply(u.audio, np.random.default_rng([_number(u.source), stream])), source=f"{u.source}#{tag}")
        for u in utterances
    ]


def conditioned_tasks(tasks: list[Task], conditions: int) -> list[Task]:
    """``tasks`` followed by each task under each of its first ``conditions`` recording conditions (``speaker@N``)."""
    return tasks + [
        Task(f"{task.name}@{number}", tuple(under_condition(task.utterances, task.name, number)))
        for number in range(1, conditions + 1) for task in tasks
    ]


def channel_tasks(tasks: list[Task], channels: Sequence[str]) -> list[Task]:
    """``tasks`` followed by each task through each named channel (``speaker@telephone``)."""
    return tasks + [Task(f"{task.name}@{name}", tuple(under_channel(task.utterances, name))) for name in channels for task in tasks]


def mismatch_tasks(tasks: list[Task], conditions: int, channels: Sequence[str]) -> list[Task]:
    """``tasks``, each under its first ``conditions`` random conditions, and each through each named channel (not both at once)."""
    return conditioned_tasks(tasks, conditions) + channel_tasks(tasks, channels)[len(tasks):]


def speaker_tasks(utterances: list[Utterance], min_clips: int) -> list[Task]:
    """One task per speaker with at least ``min_clips`` clips, sorted by speaker; smaller speakers are logged and left out."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        by_speaker.setdefault(utterance.speaker, []).append(utterance)
    small = sorted(s for s, clips in by_speaker.items() if len(clips) < min_clips)
    if small:
        log.warning("%d speakers have fewer than %d clips and are not tasks: %s", len(small), min_clips, ", ".join(small[:10]))
    return [Task(s, tuple(clips)) for s, clips in sorted(by_speaker.items()) if len(clips) >= min_clips]


def split_speakers(utterances: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """``(train, dev)`` by the committed split file; test speakers are in neither (held out of training and of every choice)."""
    held_out, dev = held_out_speakers(), dev_speakers()
    return [u for u in utterances if u.speaker not in held_out], [u for u in utterances if u.speaker in dev]


@dataclass
class EpisodeSampler:
    """Draws episodes of ``k`` support and ``query`` query clips, reproducibly from ``seed``."""

    tasks: list[Task]
    k: int
    query: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"no tasks with at least k + query = {self.k + self.query} clips")
        short = [t.name for t in self.tasks if len(t.utterances) < self.k + self.query]
        if short:
            raise ValueError(f"tasks {short[:5]} have fewer than k + query = {self.k + self.query} clips")

    def episode(self, task: Task, step: int, position: int = 0) -> Episode:
        """The training episode of ``task`` at meta-step ``step``, slot ``position``: a fixed function of the seed."""
        return self._draw(task, np.random.default_rng([self.seed, _TRAINING, step, position]))

    def _draw(self, task: Task, rng: np.random.Generator) -> Episode:
        order = rng.permutation(len(task.utterances))
        clips = [task.utterances[i] for i in order[: self.k + self.query]]
        return Episode(task.name, clips[: self.k], clips[self.k :])

    def meta_batch(self, step: int, size: int) -> list[Episode]:
        """``size`` episodes of distinct tasks (cycling if there are fewer tasks) for meta-step ``step``."""
        rng = np.random.default_rng([self.seed, _META_BATCH, step])
        order = np.concatenate([rng.permutation(len(self.tasks)) for _ in range(-(-size // len(self.tasks)))])
        return [self.episode(self.tasks[int(t)], step, position) for position, t in enumerate(order[:size])]

    def fixed_episodes(self) -> list[Episode]:
        """One episode per task, the same on every call (validation and dev selection)."""
        return [self._draw(task, np.random.default_rng([self.seed, _FIXED, i])) for i, task in enumerate(self.tasks)]
