"""Find and kill every process of a slot uid.

Each sandbox slot owns one uid, and only one run uses a slot at a time, so "every process whose
real, effective or saved uid is the slot uid" is exactly "what the last run left behind". The pid
namespace of the bubblewrap and unshare levels already kills those; the sweep is the safety net
there, and the only guarantee of the plain ``uid`` level, where it uses an atomic ``kill(-1)``.
``/proc/<pid>/status`` is read rather than the directory owner because a process that clears its
dumpable flag shows up as owned by root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time


def _status_uids_and_state(pid: str) -> tuple[set[int], str] | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read().decode("ascii", errors="replace")
    except OSError:
        return None
    uids: set[int] = set()
    state = "?"
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uids = {int(x) for x in line.split()[1:4]}
        elif line.startswith("State:"):
            state = line.split()[1] if len(line.split()) > 1 else "?"
    return uids, state


def processes_of_uid(uid: int, include_zombies: bool = True) -> list[int]:
    """Pids (host pid namespace) of processes whose real, effective or saved uid is ``uid``."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        info = _status_uids_and_state(name)
        if info is None or uid not in info[0]:
            continue
        if include_zombies or info[1] not in ("Z", "X"):
            found.append(int(name))
    return found


def signal_all_as(uid: int) -> None:
    """``kill(-1, SIGKILL)`` from a helper running as ``uid``: every process of ``uid`` dies at once.

    The kernel walks the process list under the tasklist lock, so, unlike a ``/proc`` scan, this
    cannot miss a child forked between "list" and "kill" (a scan can see the parent alive, then
    read its status after it forked and exited, and never see the child).
    """
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    killer = shutil.which("kill", path="/usr/bin:/bin")
    tail = [killer, "-KILL", "-1"] if killer else [sys.executable, "-I", "-S", "-c", _KILL_ALL_PY]
    argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--", *tail]
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)


_KILL_ALL_PY = "import os, signal; os.kill(-1, signal.SIGKILL)"


def kill_uid(uid: int, settle_s: float = 2.0, atomic: bool = False) -> int:
    """Kill every process of ``uid``; return how many were found alive.

    A ``/proc`` scan comes first; whatever it finds gets SIGKILL, and with ``atomic`` (runs without
    a pid namespace, whose children may be forking right now) a :func:`signal_all_as` helper kills
    all of the uid at once, repeated until a scan comes back clean or ``settle_s`` passes.
    Zombies are left to their reaper: bubblewrap's namespace init, for one, is re-parented to the
    host's init when the outer bwrap exits first and lingers as a zombie until that reaps it.
    """
    if uid == 0 or uid == os.geteuid():
        raise ValueError(f"refusing to sweep uid {uid}: it is not a dedicated sandbox uid")
    alive = processes_of_uid(uid, include_zombies=False)
    found = len(alive)
    if not alive and not atomic:
        return 0
    deadline = time.monotonic() + settle_s
    delay = 0.001
    while True:
        if atomic and os.geteuid() == 0:
            signal_all_as(uid)
        for pid in alive:  # right after a pid-namespace run these are usually already dying
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        alive = processes_of_uid(uid, include_zombies=False)
        if not alive or time.monotonic() > deadline:
            return found
        found += len(alive)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
