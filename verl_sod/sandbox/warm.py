"""Host side of the warm interpreter pool (``SandboxConfig(warm=True)``).

Per slot, one zygote (:mod:`.zygote_main`) runs as pid 1 of the slot's bubblewrap, under the slot
uid, started with the same prlimit/setpriv/bwrap chain as a cold run. A run sends one JSON line to
the zygote's stdin and reads one back; the zygote forks, limits, runs, sweeps and wipes (see that
module). The host keeps the last word: a deadline of ``timeout + ZYGOTE_GRACE_S`` per run, the
disk watchdog, and recycling: the zygote's whole bubblewrap (hence its pid namespace) is killed
and replaced after ``warm_max_runs`` runs, a time-out or kill, a run that left something behind,
a zygote that stops answering or dies, and a cancelled run. The slot uid is swept before every new
zygote.

Slots are still claimed per run (the flock of :mod:`.slots`), not for a zygote's life: an idle
zygote holds no lock, so two sandboxes sharing ``base_uid`` (in one process or several) never wait
on each other; they only make each other's idle zygotes restart (the sweep before a start kills
them), which costs one cold start but never mixes two runs under one uid.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field

from verl_sod.sandbox import isolation
from verl_sod.sandbox.child import ChildOutcome, kill_group
from verl_sod.sandbox.cleanup import remove_later, wait_for_cleanup, watch_disk
from verl_sod.sandbox.config import SandboxConfig
from verl_sod.sandbox.procs import kill_uid
from verl_sod.sandbox.result import CappedBuffer

ZYGOTE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote_main.py")
START_TIMEOUT_S = 60.0
ZYGOTE_GRACE_S = 2.0  # the zygote's own kill, sweep, drain and wipe after the time-out
EXIT_WAIT_S = 2.0


class ZygoteError(RuntimeError):
    """The zygote could not start, died, or broke the protocol."""


@dataclass
class _Zygote:
    proc: subprocess.Popen
    run_dir: str
    inner: list[int] = field(default_factory=list)  # host pids of the zygote (inside the namespace)
    runs: int = 0
    pending: bytearray = field(default_factory=bytearray)

    @property
    def out_fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    @property
    def in_fd(self) -> int:
        assert self.proc.stdin is not None
        return self.proc.stdin.fileno()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def _wait_fd(fd: int, deadline: float, write: bool) -> bool:
    """Wait until ``fd`` is readable (or writable); False if ``deadline`` passes first."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await asyncio.wait_for(ready, max(0.0, deadline - time.monotonic()))
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            continue
        except BlockingIOError:
            pass
        except OSError as exc:  # EPIPE: the zygote is gone
            raise ZygoteError(f"sandbox zygote died ({exc})") from exc
        if not await _wait_fd(fd, deadline, write=True):
            raise ZygoteError("sandbox zygote stopped reading its input")


async def _read_line(z: _Zygote, deadline: float) -> bytes | None:
    """One reply line; None when ``deadline`` passes. Raises ZygoteError on EOF."""
    while b"\n" not in z.pending:
        try:
            data = os.read(z.out_fd, 1 << 16)
        except BlockingIOError:
            if not await _wait_fd(z.out_fd, deadline, write=False):
                return None
            continue
        if not data:
            raise ZygoteError("sandbox zygote died during the run")
        z.pending += data
    line, _, rest = bytes(z.pending).partition(b"\n")
    z.pending[:] = rest
    return line


def _outcome(reply: dict, killed: str, cap: int, duration: float) -> ChildOutcome:
    out, err = CappedBuffer(cap), CappedBuffer(cap)
    for buf, key in ((out, "out"), (err, "err")):
        buf.feed(base64.b64decode(reply.get(key, "")))
        buf.total = max(buf.total, int(reply.get(f"{key}_total", 0)))
    rc = None if killed else reply.get("rc")
    return ChildOutcome(rc, killed or reply.get("killed", ""), out, err, duration)


_POOLS: weakref.WeakSet[WarmPool] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit: kill every zygote still alive, and remove their directories."""
    for pool in list(_POOLS):
        pool.close()
    wait_for_cleanup()


class WarmPool:
    """One zygote per slot of a :class:`~verl_sod.sandbox.local.LocalBackend`."""

    def __init__(self, cfg: SandboxConfig, level: str) -> None:
        if level not in ("bwrap", "bwrap-same-uid"):
            raise ValueError(f"the warm pool needs a bwrap isolation level, not {level!r}")
        self.cfg = cfg
        self.level = level
        self._zygotes: dict[int, _Zygote] = {}
        self._lock = threading.Lock()
        nproc = cfg.max_processes if level == "bwrap" else 0
        settings = {
            "imports": list(cfg.warm_imports),
            "cap": cfg.max_output_bytes,
            "kill_at": cfg.kill_output_bytes,
            "memory_bytes": cfg.memory_mb << 20,
            "fsize_bytes": cfg.max_file_mb << 20,
            "nofile": cfg.max_open_files,
            "nproc": nproc,
        }
        self._settings = (json.dumps(settings) + "\n").encode()
        _POOLS.add(self)

    def host_pids(self) -> dict[int, int]:
        """Slot -> host pid of the outermost process of its live zygote chain (the bubblewrap)."""
        with self._lock:
            return {slot: z.proc.pid for slot, z in self._zygotes.items() if z.proc.poll() is None}

    def _uid(self, slot: int) -> int | None:
        return self.cfg.base_uid + slot if self.level == "bwrap" else None

    def _spawn(self, slot: int) -> _Zygote:
        run_dir = isolation.prepare_run_dir(self.cfg.work_root, slot, self._uid(slot))
        source = os.path.join(run_dir, "zygote.py")
        shutil.copyfile(ZYGOTE_SOURCE, source)
        os.chmod(source, 0o644)
        launch = isolation.build_zygote_launch(self.level, self.cfg, slot, run_dir, source)
        with open(os.path.join(run_dir, "zygote.log"), "wb") as log:
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                cwd=launch.cwd,
                env=isolation.sandbox_env(launch),
            )
        z = _Zygote(proc, run_dir)
        os.set_blocking(z.out_fd, False)
        os.set_blocking(z.in_fd, False)
        return z

    async def _start(self, slot: int) -> _Zygote:
        uid = self._uid(slot)
        if uid is not None:
            await asyncio.to_thread(kill_uid, uid)  # an earlier zygote or run of this uid
        z = self._spawn(slot)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            await _write_all(z.in_fd, self._settings, deadline)
            line = await _read_line(z, deadline)
            if line is None:
                raise ZygoteError(f"sandbox zygote did not start within {START_TIMEOUT_S:.0f} s")
            hello = json.loads(line)
            if not hello.get("ready"):
                raise ZygoteError(f"sandbox zygote failed to start: {hello.get('error')}")
            z.inner = _children(z.proc.pid)
        except ZygoteError as exc:
            self._kill(z)
            raise ZygoteError(f"{exc}{self._log_tail(z.run_dir)}") from None
        except BaseException:
            self._kill(z)
            raise
        return z

    @staticmethod
    def _log_tail(run_dir: str) -> str:
        with contextlib.suppress(OSError), open(os.path.join(run_dir, "zygote.log"), "rb") as fh:
            text = fh.read()[-400:].decode("utf-8", errors="replace").strip()
            return f"; its stderr: {text}" if text else ""
        return ""

    def _kill(self, z: _Zygote) -> None:
        """Kill the zygote's whole bubblewrap (hence its namespace); wait for it; drop its files."""
        inner = z.inner or _children(z.proc.pid)
        kill_group(z.proc)  # the outer bubblewrap; --die-with-parent then kills pid 1, and with it all
        with contextlib.suppress(subprocess.TimeoutExpired):
            z.proc.wait(timeout=EXIT_WAIT_S)
        deadline = time.monotonic() + EXIT_WAIT_S
        while any(_alive(pid) for pid in inner) and time.monotonic() < deadline:
            time.sleep(0.002)
        for pipe in (z.proc.stdin, z.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if not self.cfg.keep_workdirs:
            remove_later(z.run_dir)

    def discard(self, slot: int) -> None:
        with self._lock:
            z = self._zygotes.pop(slot, None)
        if z is not None:
            self._kill(z)

    async def _ready(self, slot: int) -> _Zygote:
        with self._lock:
            z = self._zygotes.get(slot)
        if z is not None and z.proc.poll() is None:
            return z
        if z is not None:  # died while idle (swept by another owner of the uid, or killed)
            await asyncio.to_thread(self.discard, slot)
        z = await self._start(slot)
        with self._lock:
            self._zygotes[slot] = z
        return z

    async def run(self, slot: int, code: str, stdin: str | None, timeout: float) -> ChildOutcome:
        """Run ``code`` in ``slot``'s zygote, starting one if needed. Raises ZygoteError."""
        start = time.monotonic()
        z = await self._ready(slot)
        try:
            reply, killed = await self._exchange(z, code, stdin, timeout)
        except BaseException:  # died, broke the protocol, cancelled: its state is unknown
            await asyncio.shield(asyncio.to_thread(self.discard, slot))
            raise
        z.runs += 1
        if killed or reply.get("killed") or reply.get("left") or z.runs >= self.cfg.warm_max_runs:
            await asyncio.to_thread(self.discard, slot)
        return _outcome(reply, killed, self.cfg.max_output_bytes, time.monotonic() - start)

    async def _exchange(self, z: _Zygote, code: str, stdin: str | None, timeout: float) -> tuple[dict, str]:
        """The zygote's reply, and a host-side kill reason ("" if the zygote answered in time)."""
        deadline = time.monotonic() + timeout + ZYGOTE_GRACE_S
        request = json.dumps({"code": code, "stdin": stdin, "timeout": timeout}).encode() + b"\n"
        await _write_all(z.in_fd, request, deadline)
        reply_task = asyncio.ensure_future(_read_line(z, deadline))
        disk_task = asyncio.ensure_future(watch_disk(z.run_dir, self.cfg))
        try:
            await asyncio.wait({reply_task, disk_task}, return_when=asyncio.FIRST_COMPLETED)
            if not reply_task.done():
                return {}, disk_task.result()
            line = reply_task.result()
        finally:
            for task in (reply_task, disk_task):
                task.cancel()
            await asyncio.gather(reply_task, disk_task, return_exceptions=True)
        if line is None:  # the zygote hung (or the host is badly overloaded): treat as a time-out
            return {}, "timeout"
        try:
            return json.loads(line), ""
        except ValueError as exc:
            raise ZygoteError(f"sandbox zygote sent a malformed reply: {line[:200]!r}") from exc

    def close(self) -> None:
        """Kill every zygote (idempotent; also run at interpreter exit)."""
        with self._lock:
            slots = list(self._zygotes)
        for slot in slots:
            self.discard(slot)
