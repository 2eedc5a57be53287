"""Slots of the local backend: one uid each, claimed in-process and with an ``flock`` per uid.

The lock file of slot uid ``N`` is ``verl_sod_sandbox.uidN.lock`` in :func:`lock_dir`
(``/run/lock``, shared by every ``work_root``, or ``work_root`` when ``/run/lock`` is not
writable). Whoever holds it may run processes as that uid and sweep (kill) everything that uid
runs, so every user of a slot uid takes it first: runs (:class:`SlotPool`) and the isolation
probes (:func:`hold_slot`). Without it, one process's sweep kills another's probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator

from verl_sod.sandbox.config import SandboxConfig

#: Longest wait for a free slot in :func:`hold_slot` before giving up.
HOLD_WAIT_S = 600.0


def lock_dir(cfg: SandboxConfig) -> str:
    """Where slot locks live: ``/run/lock`` (shared by every work_root) when we may write there."""
    return "/run/lock" if os.access("/run/lock", os.W_OK) else cfg.work_root


def open_lock(cfg: SandboxConfig, slot: int) -> int:
    """A new descriptor on slot ``slot``'s lock file (each descriptor locks on its own)."""
    path = os.path.join(lock_dir(cfg), f"verl_sod_sandbox.uid{cfg.base_uid + slot}.lock")
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def hold_slot(cfg: SandboxConfig) -> Iterator[int]:
    """Block until some slot's lock is ours; yield the slot. For synchronous one-off users (probes)."""
    fds = [open_lock(cfg, slot) for slot in range(cfg.num_slots)]
    held: int | None = None
    try:
        deadline, delay = time.monotonic() + HOLD_WAIT_S, 0.005
        while held is None:
            held = next((slot for slot, fd in enumerate(fds) if _try_lock(fd)), None)
            if held is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no sandbox slot of uids {cfg.base_uid}..{cfg.base_uid + cfg.num_slots - 1} "
                        f"became free within {HOLD_WAIT_S:.0f} s (locks in {lock_dir(cfg)})"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield held
    finally:
        for fd in fds:
            os.close(fd)  # closing the descriptor releases its lock


class SlotPool:
    """``num_slots`` exclusive slots, shared by every event loop and thread of this process."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self._cfg = cfg
        self._free = list(range(cfg.num_slots))
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _try_take(self) -> int | None:
        with self._lock:
            for slot in list(self._free):
                fd = self._fds.get(slot)
                if fd is None:
                    fd = self._fds[slot] = open_lock(self._cfg, slot)
                if not _try_lock(fd):
                    continue  # another process (or a probe) holds it
                self._free.remove(slot)
                return slot
        return None

    def _give_back(self, slot: int) -> None:
        with self._lock:
            fcntl.flock(self._fds[slot], fcntl.LOCK_UN)
            self._free.append(slot)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._sems.setdefault(loop, asyncio.Semaphore(self._cfg.num_slots))
        async with sem:
            delay = 0.002
            while (slot := self._try_take()) is None:  # held by another loop or process
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            try:
                yield slot
            finally:
                self._give_back(slot)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
