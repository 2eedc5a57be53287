"""Run one child process under asyncio with capped output, a wall-clock limit and a hard kill.

``asyncio.create_subprocess_exec`` is not used on purpose: on Python 3.11 ``Process.wait()`` only
returns once every pipe is closed, so a grandchild that keeps stdout open (or a flood we stop
reading) would hang it. Here the pipes and a pidfd are watched directly with ``add_reader``: exit
is known from the pidfd, pipes are read into :class:`CappedBuffer` s, and after exit the pipes get
a short grace period to reach EOF before they are closed regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from verl_sod.sandbox.result import CappedBuffer

READ_CHUNK = 65536
DRAIN_GRACE_S = 1.0
KILL_WAIT_S = 10.0


@dataclass
class ChildOutcome:
    returncode: int | None
    killed: str  # "" | "timeout" | "output" | a watchdog's reason
    stdout: CappedBuffer
    stderr: CappedBuffer
    duration_s: float


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it leads a new session) and the child itself."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


class _Watch:
    """Reader/writer callbacks for one child's pipes and its exit."""

    def __init__(self, proc: subprocess.Popen, cap: int, kill_at: int, stdin: bytes | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc = proc
        self.kill_at = kill_at
        self.out, self.err = CappedBuffer(cap), CappedBuffer(cap)
        self.flood: asyncio.Future[None] = self.loop.create_future()
        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.eofs: list[asyncio.Future[None]] = []
        self._fds: list[int] = []
        self._stdin, self._pos = stdin or b"", 0
        for pipe, buf in ((proc.stdout, self.out), (proc.stderr, self.err)):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            eof = self.loop.create_future()
            self.eofs.append(eof)
            self.loop.add_reader(fd, self._on_read, fd, buf, eof)
            self._fds.append(fd)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self.loop.add_writer(proc.stdin.fileno(), self._on_write)
        self._pidfd = self._watch_exit()

    def _watch_exit(self) -> int | None:
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.loop.create_task(self._poll_exit())  # kernels without pidfd (< 5.3)
            return None
        self.loop.add_reader(pidfd, self._set, self.exited)
        return pidfd

    async def _poll_exit(self) -> None:
        while self.proc.poll() is None:
            await asyncio.sleep(0.005)
        self._set(self.exited)

    @staticmethod
    def _set(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_result(None)

    def _on_read(self, fd: int, buf: CappedBuffer, eof: asyncio.Future[None]) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(fd)
            self._set(eof)
            return
        buf.feed(data)
        if buf.total > self.kill_at:
            self._set(self.flood)

    def _on_write(self) -> None:
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        try:
            self._pos += os.write(fd, self._stdin[self._pos : self._pos + READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the program stopped reading stdin
            self._pos = len(self._stdin)
        if self._pos >= len(self._stdin):
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.loop.remove_writer(self.proc.stdin.fileno())
            self.proc.stdin.close()

    def close(self) -> None:
        self._close_stdin()
        for fd in self._fds:
            self.loop.remove_reader(fd)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


async def run_child(
    argv: list[str],
    *,
    timeout_s: float,
    cap: int,
    kill_at: int,
    stdin: bytes | None,
    after_exit: Callable[[subprocess.Popen], Awaitable[None]],
    watchdog: Callable[[], Awaitable[str]] | None = None,
    **popen: Any,
) -> ChildOutcome:
    """Start ``argv`` (``popen`` goes to :class:`subprocess.Popen`) and collect its output.

    ``watchdog`` (optional) runs alongside the child; when it returns a reason the child is killed
    with that reason. ``after_exit`` runs once the child has exited or been killed, before the
    pipes are drained: it is where the caller kills whatever the child left behind.
    """
    start = time.monotonic()
    stdin_mode = subprocess.PIPE if stdin is not None else subprocess.DEVNULL
    pipe = subprocess.PIPE
    proc = subprocess.Popen(argv, stdin=stdin_mode, stdout=pipe, stderr=pipe, start_new_session=True, **popen)
    watch = _Watch(proc, cap, kill_at, stdin)
    guard = asyncio.ensure_future(watchdog()) if watchdog is not None else None
    killed = ""
    try:
        stops: set[asyncio.Future[Any]] = {watch.exited, watch.flood, *([guard] if guard else [])}
        done, _ = await asyncio.wait(stops, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if watch.exited not in done:
            if watch.flood in done:
                killed = "output"
            else:
                killed = guard.result() if guard is not None and guard in done else "timeout"
            kill_group(proc)
            await asyncio.wait({watch.exited}, timeout=KILL_WAIT_S)
        await after_exit(proc)
        await asyncio.wait(watch.eofs, timeout=DRAIN_GRACE_S)
        returncode = proc.wait(timeout=KILL_WAIT_S) if watch.exited.done() else None
    finally:
        if guard is not None:
            guard.cancel()
        if proc.poll() is None:  # cancelled, or a child that survived SIGKILL for 10 s
            kill_group(proc)
        watch.close()
    return ChildOutcome(returncode, killed, watch.out, watch.err, time.monotonic() - start)
