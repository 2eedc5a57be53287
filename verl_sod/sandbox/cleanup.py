"""Clean-up shared by the cold (:mod:`.local`) and warm (:mod:`.warm`) backends.

- :func:`remove_later` / :func:`wait_for_cleanup`: finished run directories are deleted by one
  background thread per process (the *janitor*), off the caller's path.
- :func:`dir_usage` and :func:`watch_disk`: the disk watchdog, which polls a run directory every
  :data:`WATCH_INTERVAL_S` and reports ``"disk"`` once it passes the configured size or entry count.

Neither backend imports the other; both import this module.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import shutil
import threading

from verl_sod.sandbox.config import SandboxConfig

#: How often the disk watchdog looks at a run directory (a fast writer overshoots by this much).
WATCH_INTERVAL_S = 0.25
#: The reason :func:`watch_disk` returns, which the backends turn into an ``error`` result.
DISK_KILL_REASON = "disk"


class Janitor:
    """Deletes finished run directories in a background thread.

    Off the caller's path because removing a directory that was a bind-mount source in a namespace
    that is still being torn down costs 1-4 ms each (the kernel detaches the mounts). Each run has a
    directory of its own, so a slot can be reused before its old directory is gone.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def remove(self, path: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sandbox-janitor", daemon=True)
                self._thread.start()
                atexit.register(self.wait)  # a daemon thread: finish the queue before exit
        self._queue.put(path)

    def _loop(self) -> None:
        while True:
            path = self._queue.get()
            shutil.rmtree(path, ignore_errors=True)
            self._queue.task_done()

    def wait(self) -> None:
        """Block until every queued directory is gone."""
        self._queue.join()


_JANITOR = Janitor()


def remove_later(path: str) -> None:
    """Queue ``path`` (a finished run directory) for removal by this process's janitor thread."""
    _JANITOR.remove(path)


def wait_for_cleanup() -> None:
    """Block until the background removal of finished run directories has caught up."""
    _JANITOR.wait()


def dir_usage(root: str, max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) under ``root``, not following symlinks; stops past ``max_entries``."""
    used, entries, stack = 0, 0, [root]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    with contextlib.suppress(OSError):
                        used += entry.stat(follow_symlinks=False).st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
        except OSError:
            continue
    return used, entries


async def watch_disk(run_dir: str, cfg: SandboxConfig) -> str:
    """Return :data:`DISK_KILL_REASON` once ``run_dir`` passes ``max_workdir_mb`` or
    ``max_workdir_files``; runs until cancelled otherwise."""
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        used, entries = await asyncio.to_thread(dir_usage, run_dir, cfg.max_workdir_files)
        if used > cfg.max_workdir_mb << 20 or entries > cfg.max_workdir_files:
            return DISK_KILL_REASON
