"""Choosing the isolation level: probes that survive other processes' sweeps and a loaded machine,
a decision made once and kept in a per-host cache that only trusted, matching entries can answer.

Needs root and bubblewrap, like ``test_sandbox_local_on_cpu.py``. Uses its own slot uids.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator

import pytest
import sandbox_hostile as hostile

from verl_sod.sandbox import SandboxConfig, SandboxUnavailableError, level_cache, levels
from verl_sod.sandbox.procs import kill_uid, processes_of_uid
from verl_sod.sandbox.slots import SlotPool, lock_dir

BASE_UID = 62300


@pytest.fixture
def scratch() -> Iterator[str]:
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        pytest.fail("needs root and bubblewrap: `apt-get install -y bubblewrap`", pytrace=False)
    yield from hostile.scratch_dir("verl_sod_levels-")


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(levels, "_MEMO", {})  # as in a new process


def _cfg(scratch: str, **changes: object) -> SandboxConfig:
    return hostile.make_config(scratch, **{"base_uid": BASE_UID, "num_slots": 1, **changes})


def test_probe_is_not_killed_by_sweeps_of_its_uid(scratch: str) -> None:
    """Every first run of a process sweeps its slot uid; a probe running as that uid without the
    slot lock was killed by it ("probe exited -9" under load). Probes now hold the lock."""
    cfg = _cfg(scratch)
    stop = threading.Event()
    sweeps = 0

    async def sweep_forever() -> None:
        nonlocal sweeps
        pool = SlotPool(cfg)
        try:
            while not stop.is_set():
                async with pool.slot() as slot:
                    kill_uid(cfg.base_uid + slot)
                    sweeps += 1
                await asyncio.sleep(0)
        finally:
            pool.close()

    sweeper = threading.Thread(target=asyncio.run, args=(sweep_forever(),))
    sweeper.start()
    try:
        outcomes = [levels.probe_once("bwrap", cfg) for _ in range(12)]
    finally:
        stop.set()
        sweeper.join()
    assert sweeps > 0
    assert [o.reason for o in outcomes] == [None] * 12


def test_killed_probe_is_inconclusive_and_retried(scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    answers = [
        levels.ProbeOutcome("probe exited -9 (killed by signal 9)", conclusive=False),
        levels.ProbeOutcome("probe did not finish", conclusive=False),
        levels.ProbeOutcome(None),
    ]

    def fake_probe(level: str, cfg: SandboxConfig) -> levels.ProbeOutcome:
        calls.append(level)
        return answers[len(calls) - 1]

    monkeypatch.setattr(levels, "probe_once", fake_probe)
    monkeypatch.setattr(levels, "PROBE_BACKOFF_S", 0.0)
    assert levels.probe_level("bwrap", _cfg(scratch)) == levels.ProbeOutcome(None)
    assert calls == ["bwrap"] * 3


def test_always_inconclusive_is_not_remembered(scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(scratch, isolation="bwrap")
    calls = []

    def killed(level: str, cfg: SandboxConfig) -> levels.ProbeOutcome:
        calls.append(level)
        return levels.ProbeOutcome("probe exited 137 (killed by signal 9)", conclusive=False)

    monkeypatch.setattr(levels, "probe_once", killed)
    monkeypatch.setattr(levels, "PROBE_BACKOFF_S", 0.0)
    with pytest.raises(SandboxUnavailableError, match="inconclusive 4 times"):
        levels.select_level(cfg)
    assert len(calls) == levels.PROBE_ATTEMPTS
    monkeypatch.undo()  # the real probe again, same process: it must run, not repeat the failure
    monkeypatch.setattr(levels, "_MEMO", {})
    assert levels.select_level(cfg) == "bwrap"


def test_exit_codes_that_mean_killed() -> None:
    assert levels.killed_by_signal("bwrap", 137) == 9  # bubblewrap's 128 + N
    assert levels.killed_by_signal("uid", -9) == 9
    assert levels.killed_by_signal("uid", 137) is None  # no wrapper that maps signals at this level
    assert levels.killed_by_signal("bwrap", 1) is None


def test_success_is_cached_on_disk_and_reused_without_probing(
    scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(scratch)
    assert levels.select_level(cfg) == "bwrap"
    key = level_cache.cache_key("bwrap", cfg)
    path = level_cache.entry_path(key, cfg)
    st = os.lstat(path)
    assert os.path.dirname(path) == lock_dir(cfg) and stat.S_ISREG(st.st_mode)
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o644
    with open(path) as fh:
        assert json.load(fh)["key"] == key

    def no_probe(level: str, cfg: SandboxConfig) -> levels.ProbeOutcome:
        raise AssertionError(f"probed {level} although the cache says it works")

    monkeypatch.setattr(levels, "probe_once", no_probe)
    monkeypatch.setattr(levels, "_MEMO", {})  # a new process
    assert levels.select_level(cfg) == "bwrap"
    other = _cfg(scratch)  # another work root: another key, so it is probed
    with pytest.raises(AssertionError, match="probed bwrap"):
        levels.select_level(other)


def test_untrusted_or_mismatched_entries_are_ignored(scratch: str) -> None:
    cfg = _cfg(scratch)
    key = level_cache.cache_key("bwrap", cfg)
    path = level_cache.entry_path(key, cfg)
    level_cache.store(key, cfg)
    assert level_cache.load(key, cfg)
    os.chmod(path, 0o666)  # writable by anyone: someone else could have written it
    assert not level_cache.load(key, cfg)
    os.chmod(path, 0o644)
    with open(path, "w") as fh:
        json.dump({"key": {**key, "python": None}, "works": True}, fh)  # a different key's content
    assert not level_cache.load(key, cfg)
    os.unlink(path)
    os.symlink("/etc/hostname", path)
    assert not level_cache.load(key, cfg)
    os.unlink(path)


def test_concurrent_writers_leave_one_valid_entry(scratch: str) -> None:
    cfg = _cfg(scratch)
    key = level_cache.cache_key("bwrap", cfg)
    barrier = threading.Barrier(32)

    def write() -> None:
        barrier.wait()
        for _ in range(20):
            level_cache.store(key, cfg)
            assert level_cache.load(key, cfg)  # a reader never sees a partial file

    threads = [threading.Thread(target=write) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert level_cache.load(key, cfg)
    assert glob.glob(os.path.join(lock_dir(cfg), "." + level_cache.PREFIX + "*")) == []


def test_failures_are_never_written(scratch: str) -> None:
    fake = os.path.join(scratch, "fakepython")
    with open(fake, "w") as fh:
        fh.write("#!/bin/sh\nexit 3\n")
    os.chmod(fake, 0o755)
    cfg = _cfg(scratch, python=fake)
    with pytest.raises(SandboxUnavailableError, match="probe exited") as info:
        levels.select_level(cfg)
    assert "inconclusive" not in str(info.value)  # an exit code of its own is conclusive
    for level in ("bwrap", "unshare", "uid"):
        assert not os.path.exists(level_cache.entry_path(level_cache.cache_key(level, cfg), cfg))
    assert processes_of_uid(cfg.base_uid, include_zombies=False) == []
