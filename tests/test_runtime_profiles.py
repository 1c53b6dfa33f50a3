"""Profiles: versions and rollback, binding to a bundle, tamper refusal, atomic saves under SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.runtime.atomic_file import atomic_write
from edgemeta.runtime.profile_store import (
    POINTER,
    Profile,
    ProfileError,
    ProfileStore,
    StoredClip,
    UserNameError,
    check_user,
    edgemeta_home,
)

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


def make_profile(user: str, value: float, digest: str = DIGEST_A, seconds: float = 1.0) -> Profile:
    """A profile whose head weights are all ``value`` and which keeps one clip of ``seconds``."""
    rng = np.random.default_rng(int(value))
    weights = {"head.scale": torch.full((8,), value), "head.output.weight": torch.full((4, 8), value)}
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    return Profile(user, digest, weights, True, [StoredClip("c0.wav", "hello world", audio)], {"note": value})


def test_save_load_versions_and_rollback(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    first = store.save(make_profile("alice", 1.0))
    second = store.save(make_profile("alice", 2.0))
    assert (first.version, second.version) == (1, 2)
    current = store.load("alice", DIGEST_A)
    assert current.version == 2 and float(current.weights["head.scale"][0]) == 2.0
    assert current.clips[0].text == "hello world"
    assert np.abs(current.clips[0].audio - make_profile("alice", 2.0).clips[0].audio).max() < 1e-4
    assert store.previous("alice").version == 1
    assert store.rollback("alice").version == 1
    assert store.previous("alice").version == 2
    assert store.rollback("alice").version == 2, "a second rollback undoes the first"
    assert store.save(make_profile("alice", 3.0)).version == 3
    assert store.users() == ["alice"]
    store.delete("alice")
    assert store.users() == []
    with pytest.raises(ProfileError, match="no profile"):
        store.load("alice")


def test_profile_for_another_bundle_is_refused(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    store.save(make_profile("bob", 1.0, DIGEST_A))
    with pytest.raises(ProfileError, match="another bundle.*profiles migrate bob"):
        store.load("bob", DIGEST_B)


@pytest.mark.parametrize("change", ["weights", "metadata"])
def test_tampered_profile_is_refused(tmp_path: Path, change: str) -> None:
    store = ProfileStore(tmp_path)
    store.save(make_profile("carol", 1.0))
    path = store.folder("carol") / store.version_file(1)
    data = bytearray(path.read_bytes())
    if change == "weights":
        data[-5] ^= 0x01  # inside the last tensor's bytes
    else:
        text = data.decode("latin-1").replace("hello world", "hello wurld", 1)  # same length: still valid safetensors
        assert text != data.decode("latin-1")
        data = bytearray(text.encode("latin-1"))
    path.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="modified or corrupted"):
        store.load("carol")


@pytest.mark.parametrize("name", ["", "a b", "../etc", ".", "..", "x" * 65, "émile", "a/b"])
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(UserNameError, match="bad user name"):
        check_user(name)


def test_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEMETA_HOME", str(tmp_path / "h"))
    assert edgemeta_home() == tmp_path / "h"
    monkeypatch.delenv("EDGEMETA_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert edgemeta_home() == tmp_path / "xdg" / "edgemeta"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert edgemeta_home() == Path.home() / ".local" / "share" / "edgemeta"


def save_forever(home: Path, saved: "multiprocessing.SimpleQueue") -> None:
    """Save versions 1, 2, 3, ... of dave's profile until killed, reporting each completed save."""
    store = ProfileStore(home)
    value = 1.0
    while True:
        store.save(make_profile("dave", value, seconds=10.0))
        saved.put(value)
        value += 1.0


@pytest.mark.parametrize("target", ["v*.safetensors", POINTER])
def test_killed_save_leaves_a_complete_profile(tmp_path: Path, target: str) -> None:
    """Stop a saving process while its temporary ``target`` file is on disk, then SIGKILL it: the profile still loads."""
    context = multiprocessing.get_context("fork")  # a real process, without paying for imports again
    saved = context.SimpleQueue()
    saver = context.Process(target=save_forever, args=(tmp_path, saved), daemon=True)
    saver.start()
    folder = ProfileStore(tmp_path).folder("dave")
    try:
        first = [saved.get() for _ in range(2)]  # current and previous both exist
        deadline = time.monotonic() + 60
        caught: list[str] = []
        while not caught and time.monotonic() < deadline:
            if list(folder.glob(f".{target}.*.tmp")):
                os.kill(saver.pid, signal.SIGSTOP)
                caught = [p.name for p in folder.glob(f".{target}.*.tmp")]  # still there: stopped mid-save
                if not caught:
                    os.kill(saver.pid, signal.SIGCONT)
        assert caught, f"never stopped the saver while a temporary {target} existed"
        os.kill(saver.pid, signal.SIGKILL)
    finally:
        saver.kill()
        saver.join()
    assert first == [1.0, 2.0]
    assert sorted(p.name for p in folder.glob(".*.tmp")) == caught, "the half-written file stays behind"
    store = ProfileStore(tmp_path)
    current, previous = store.load("dave"), store.previous("dave")
    assert current.version == float(current.weights["head.scale"][0]) >= 2
    assert previous.version == current.version - 1 == float(previous.weights["head.scale"][0])
    assert len(current.clips[0].audio) == 10 * 16000
    assert store.save(make_profile("dave", 100.0)).version > current.version
    assert store.previous("dave").version == current.version


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "file.bin"
    atomic_write(path, b"old")
    atomic_write(path, lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new"

    def fail_halfway(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail_halfway)
    assert path.read_bytes() == b"new" and sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]
