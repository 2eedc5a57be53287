"""Per-host memory of isolation levels that probed fine, so later processes need not probe.

One small JSON file per (level, key) in the slot-lock directory (:func:`.slots.lock_dir`, normally
``/run/lock``, a tmpfs emptied at boot): ``verl_sod_sandbox.isolation-<digest>.json``. The key
holds everything the probe's outcome depends on: the level, our euid, the slot uids, the
interpreter, bubblewrap and util-linux binaries (path, size, mtime, mode), ``work_root``, extra
binds, the kernel release, the boot id, the user-namespace sysctls, the host name and a digest of
the launch code (:mod:`.isolation`). Change any of them and the entry no longer applies.

Writers never clash: each writes a private temporary file and ``os.replace`` s it into place
(atomic), and the whole key is stored and compared on read. Entries not owned by our euid, not a
regular file, or writable by group/others are ignored, so another user cannot plant one. Only
successes are stored; every error here is swallowed (the cache is an optimisation: without it the
level is simply probed again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from verl_sod.sandbox import isolation
from verl_sod.sandbox.config import SandboxConfig
from verl_sod.sandbox.slots import lock_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
PREFIX = "verl_sod_sandbox.isolation-"
SYSCTLS = (
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/user/max_pid_namespaces",
    "/proc/sys/user/max_net_namespaces",
)
_SOURCE_DIGEST = hashlib.sha256(Path(isolation.__file__).read_bytes()).hexdigest()[:16]


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _binary(name: str) -> list[Any] | None:
    found = shutil.which(name)
    if found is None:
        return None
    real = os.path.realpath(found)
    try:
        st = os.stat(real)
    except OSError:
        return [real, None]
    return [real, st.st_size, st.st_mtime_ns, st.st_mode]


def cache_key(level: str, cfg: SandboxConfig) -> dict[str, Any]:
    """Everything the probe of ``level`` under ``cfg`` depends on, as plain JSON values."""
    return {
        "version": CACHE_VERSION,
        "code": _SOURCE_DIGEST,
        "level": level,
        "euid": os.geteuid(),
        "base_uid": cfg.base_uid,
        "python": _binary(cfg.python),
        "bwrap": _binary(cfg.bwrap_path),
        "tools": [_binary(tool) for tool in ("prlimit", "setpriv", "unshare")],
        "work_root": cfg.work_root,
        "extra_ro_binds": list(cfg.extra_ro_binds),
        "kernel": os.uname().release,
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "sysctls": [_read(path) for path in SYSCTLS],
        "host": socket.gethostname(),
    }


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def entry_path(key: dict[str, Any], cfg: SandboxConfig) -> str:
    return os.path.join(lock_dir(cfg), f"{PREFIX}{digest(key)}.json")


def load(key: dict[str, Any], cfg: SandboxConfig) -> bool:
    """True if a trusted entry says the level of ``key`` works."""
    path = entry_path(key, cfg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            logger.warning(
                "ignoring sandbox isolation cache %s: not a private file of uid %d", path, os.geteuid()
            )
            return False
        try:
            entry = json.loads(fh.read(1 << 16))
        except ValueError:
            return False
    return isinstance(entry, dict) and entry.get("key") == key and entry.get("works") is True


def store(key: dict[str, Any], cfg: SandboxConfig) -> None:
    """Record that the level of ``key`` works (atomic; safe with any number of concurrent writers)."""
    path = entry_path(key, cfg)
    body = json.dumps({"key": key, "works": True, "probed_at": time.time()}).encode()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{PREFIX}", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            os.fchmod(fh.fileno(), 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        logger.debug("could not write sandbox isolation cache %s: %s", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def forget(key: dict[str, Any], cfg: SandboxConfig) -> None:
    """Drop the entry of ``key`` (``doctor`` does this for a level that no longer works)."""
    with contextlib.suppress(OSError):
        os.unlink(entry_path(key, cfg))
