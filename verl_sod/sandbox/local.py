"""The local backend: run model-written Python in a child process at the selected isolation level.

One run holds one *slot* (its own uid and work directory) from start to clean-up; slots are
claimed in-process and with an ``flock`` per uid (:mod:`.slots`), so two processes that share
``base_uid`` never run two programs under one uid at once. The level is chosen once
(:mod:`.levels`); clean-up and the disk watchdog are :mod:`.cleanup`'s. Output is read as it
arrives into capped buffers; on the wall-clock limit, or when output passes ``kill_output_bytes``,
everything is killed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import warnings

from verl_sod.sandbox import isolation
from verl_sod.sandbox.child import ChildOutcome, kill_group, run_child
from verl_sod.sandbox.cleanup import DISK_KILL_REASON, remove_later, wait_for_cleanup, watch_disk
from verl_sod.sandbox.config import SandboxConfig
from verl_sod.sandbox.levels import select_level
from verl_sod.sandbox.procs import kill_uid
from verl_sod.sandbox.result import SandboxResult
from verl_sod.sandbox.slots import SlotPool
from verl_sod.sandbox.warm import WarmPool, ZygoteError


def _normalise_exit(level: str, rc: int) -> int:
    """bubblewrap (and some util-linux versions) report death by signal N as exit 128+N."""
    if level in ("bwrap", "bwrap-same-uid", "unshare") and 128 < rc < 128 + 65:
        return -(rc - 128)
    return rc


class LocalBackend:
    """Runs code at the strongest isolation level available (see :mod:`.isolation`)."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        isolation.ensure_work_root(cfg.work_root)
        self.level = select_level(cfg)
        self._pool = SlotPool(cfg)
        self._swept: set[int] = set()  # slots checked for leftovers since this backend started
        self._warm = self._warm_pool()

    def _warm_pool(self) -> WarmPool | None:
        if not self.cfg.warm:
            return None
        if self.level in ("bwrap", "bwrap-same-uid"):
            return WarmPool(self.cfg, self.level)
        msg = f"verl_sod sandbox: warm=True needs a bwrap isolation level; running cold at {self.level!r}"
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return None

    def close(self) -> None:
        if self._warm is not None:
            self._warm.close()
        self._pool.close()
        wait_for_cleanup()

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        timeout = self.cfg.timeout_s if timeout_s is None else float(timeout_s)
        if not 0 < timeout <= 3600:
            raise ValueError(f"timeout_s={timeout!r} is out of range (0, 3600]")
        async with self._pool.slot() as slot:
            return await self._run_in_slot(slot, code, stdin, timeout)

    def _slot_uid(self, slot: int) -> int | None:
        return self.cfg.base_uid + slot if isolation.uses_slot_uid(self.level) else None

    async def _run_in_slot(self, slot: int, code: str, stdin: str | None, timeout: float) -> SandboxResult:
        if self._warm is not None:
            try:
                outcome = await self._warm.run(slot, code, stdin, timeout)
            except (ZygoteError, OSError) as exc:
                return SandboxResult("sandbox_error", "", f"sandbox zygote failed: {exc}", None, 0.0)
            return self._result(self.level, outcome)
        uid = self._slot_uid(slot)
        if uid is not None and slot not in self._swept:
            await asyncio.to_thread(kill_uid, uid)  # leftovers of an earlier owner that crashed
            self._swept.add(slot)
        run_dir = isolation.prepare_run_dir(self.cfg.work_root, slot, uid)
        settled = False
        try:
            launch = isolation.build_launch(self.level, self.cfg, slot, run_dir, timeout)
            main = os.path.join(run_dir, "work", "main.py")
            with open(main, "w", encoding="utf-8") as fh:
                fh.write(code)
            if uid is not None:
                os.chown(main, uid, uid)
            result, settled = await self._execute(launch, stdin, timeout)
            return result
        finally:
            if settled or uid is None:
                self._clean_up(None, run_dir)  # only queues the directory for removal
            else:
                await asyncio.to_thread(self._clean_up, uid, run_dir)  # before the slot is reused

    def _clean_up(self, uid: int | None, run_dir: str) -> None:
        if uid is not None:
            kill_uid(uid)
        if not self.cfg.keep_workdirs:
            remove_later(run_dir)

    async def _execute(
        self, launch: isolation.Launch, stdin: str | None, timeout: float
    ) -> tuple[SandboxResult, bool]:
        """The result, and whether the run is known to have left nothing behind.

        That is the case when a pid-namespace run exits by itself: the namespace's init has died,
        so the kernel has killed every process in it, and the ``/proc`` sweep (1-2 ms, more on a
        busy host) can be skipped. After a kill, a failed start or a run without a pid namespace,
        the slot uid is swept.
        """
        cfg = self.cfg

        async def after_exit(proc: subprocess.Popen) -> None:
            """Kill what a run without a pid namespace left behind (it may hold our pipes)."""
            if launch.pid_namespace:
                return
            if launch.uid is not None:
                await asyncio.to_thread(kill_uid, launch.uid, 2.0, True)
            else:
                kill_group(proc)  # unsafe level: the process group is all we can find

        try:
            outcome = await run_child(
                launch.argv,
                watchdog=functools.partial(watch_disk, os.path.dirname(launch.cwd), cfg),
                timeout_s=timeout,
                cap=cfg.max_output_bytes,
                kill_at=cfg.kill_output_bytes,
                stdin=None if stdin is None else stdin.encode("utf-8", errors="replace"),
                after_exit=after_exit,
                cwd=launch.cwd,
                env=isolation.sandbox_env(launch),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult("sandbox_error", "", f"sandbox failed to start: {exc}", None, 0.0), False
        settled = launch.pid_namespace and not outcome.killed and outcome.returncode is not None
        return self._result(launch.level, outcome), settled

    def _result(self, level: str, outcome: ChildOutcome) -> SandboxResult:
        killed, duration, rc = outcome.killed, outcome.duration_s, outcome.returncode
        out, err = outcome.stdout, outcome.stderr
        stdout = out.text(dropped_is_lower_bound=killed == "output")
        stderr = err.text(dropped_is_lower_bound=killed == "output")
        if killed == "timeout":
            note = f"[sandbox: wall-clock limit reached after {duration:.2f}s; killed]"
            return SandboxResult("timeout", stdout, _append(stderr, note), None, duration)
        if killed == DISK_KILL_REASON:
            note = (
                f"[sandbox: work directory passed {self.cfg.max_workdir_mb} MiB or "
                f"{self.cfg.max_workdir_files} entries; killed]"
            )
            return SandboxResult("error", stdout, _append(stderr, note), None, duration)
        if killed == "output":
            note = f"[sandbox: output passed {self.cfg.kill_output_bytes} bytes; killed]"
            return SandboxResult("error", stdout, _append(stderr, note), None, duration)
        code = _normalise_exit(level, rc if rc is not None else -1)
        if code == 1 and level.startswith("bwrap") and stderr.startswith("bwrap: "):
            return SandboxResult("sandbox_error", stdout, stderr, None, duration)
        if code == -signal.SIGXCPU:
            note = "[sandbox: CPU-time limit reached; killed]"
            return SandboxResult("timeout", stdout, _append(stderr, note), code, duration)
        return SandboxResult("ok" if code == 0 else "error", stdout, stderr, code, duration)


def _append(text: str, note: str) -> str:
    return f"{text}\n{note}" if text and not text.endswith("\n") else f"{text}{note}"
