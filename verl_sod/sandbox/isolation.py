"""Isolation levels of the local backend: how to launch a program at each (which one works here is
decided by :mod:`.levels`).

Strongest first:

``bwrap``
    Running as root, the launcher drops to the slot's own uid/gid (no supplementary groups) and
    execs bubblewrap with new user, network, pid, ipc and uts namespaces. The sandbox sees a
    read-only ``/usr`` (plus the few ``/etc`` files Python needs), its own ``/proc`` and ``/dev``
    and a fresh writable ``/work`` and ``/tmp``; nothing else of the host exists inside.
``bwrap-same-uid``
    Not root: bubblewrap as the calling user. Loses the per-slot uid, hence RLIMIT_NPROC.
``unshare``
    Root without working bubblewrap: ``unshare --net --pid --fork --kill-child`` then ``setpriv``
    to the slot uid. Loses the filesystem view: host files readable by "other" are readable.
``uid``
    Root without namespaces: a plain subprocess as the slot uid. Loses network isolation, the
    filesystem view and the pid namespace (a ``/proc`` sweep of the slot uid kills leftovers).
``unsafe``
    A plain subprocess as the calling user. Only with ``allow_unsafe=True``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass

from verl_sod.sandbox.config import SandboxConfig

#: What each level gives up relative to ``bwrap`` (empty: nothing).
LOST: dict[str, str] = {
    "bwrap": "",
    "bwrap-same-uid": "the per-slot uid, hence the RLIMIT_NPROC fork bound (a fork bomb can fill this "
    "user's process table until the time-out; the pid namespace still kills everything at the end)",
    "unshare": "filesystem isolation (host files readable by 'other' can be read; world-writable "
    "directories such as /tmp can be written)",
    "uid": "network isolation, filesystem isolation beyond uid permissions, and the pid namespace "
    "(leftover processes are only killed by a /proc sweep of the slot uid)",
    "unsafe": "ALL isolation: code runs as the calling user with its network, files and processes",
}
INSTALL_HINT = "install bubblewrap: `apt-get install -y bubblewrap`"
SANDBOX_WORK = "/work"
SANDBOX_TMP = "/tmp"
ETC_FILES = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")


@dataclass(frozen=True)
class Launch:
    """One way to start the sandboxed interpreter."""

    level: str
    argv: list[str]
    uid: int | None  # the slot uid the program runs as; None: the caller's own
    pid_namespace: bool
    cwd: str  # host directory to start in
    workdir_inside: str  # the work directory as the program sees it
    tmpdir_inside: str


def uses_slot_uid(level: str) -> bool:
    return level in ("bwrap", "unshare", "uid")


def _python_binds(python: str) -> list[str]:
    real = os.path.realpath(python)
    if real.startswith("/usr/"):
        return []
    return [os.path.dirname(os.path.dirname(real))]


def _bwrap_argv(
    cfg: SandboxConfig, work: str, tmp: str, main_inside: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """bubblewrap's argv; ``extra`` (more bwrap options) goes just before ``--chdir``."""
    argv = [cfg.bwrap_path, "--die-with-parent", "--new-session", "--unshare-user", "--unshare-net"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + top
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    for path in [*_python_binds(cfg.python), *cfg.extra_ro_binds]:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", work, SANDBOX_WORK, "--bind", tmp, SANDBOX_TMP]
    argv += ["--bind", os.path.join(os.path.dirname(work), "shm"), "/dev/shm"]  # on disk, not in RAM
    argv += [*extra, "--chdir", SANDBOX_WORK, "--remount-ro", "/", "--"]
    return [*argv, cfg.python, "-I", "-B", "-u", main_inside]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


def prlimit_prefix(cfg: SandboxConfig, level: str, timeout_s: float) -> list[str]:
    """``prlimit`` (util-linux) setting every rlimit, then exec'ing the rest of the argv.

    Limits are set by exec'd helpers instead of a ``preexec_fn`` so that ``subprocess`` can use
    ``vfork``: a ``fork`` of a large parent (torch loaded) blocks the event loop for 5-20 ms.
    """
    # one second of slack, so that a single busy process meets the wall-clock limit first (status
    # "timeout", no exit code) instead of racing it; multi-process CPU burn still hits this bound
    cpu = math.ceil(timeout_s) + 1
    mem, fsize = cfg.memory_mb << 20, cfg.max_file_mb << 20
    argv = [_tool("prlimit"), f"--cpu={cpu}:{cpu + 1}", f"--as={mem}:{mem}", f"--fsize={fsize}:{fsize}"]
    argv += ["--core=0:0", f"--nofile={cfg.max_open_files}:{cfg.max_open_files}"]
    if uses_slot_uid(level):
        # Counted per uid: only meaningful with a uid of our own (and ignored for root).
        argv.append(f"--nproc={cfg.max_processes}:{cfg.max_processes}")
    return [*argv, "--"]


def _setpriv(uid: int) -> list[str]:
    return [_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]


def build_launch(level: str, cfg: SandboxConfig, slot: int, run_dir: str, timeout_s: float) -> Launch:
    """Argv and identity for running ``run_dir/work/main.py`` at ``level`` in ``slot``."""
    work, tmp = os.path.join(run_dir, "work"), os.path.join(run_dir, "tmp")
    uid = cfg.base_uid + slot
    limits = prlimit_prefix(cfg, level, timeout_s)
    py = [cfg.python, "-I", "-B", "-u"]
    if level in ("bwrap", "bwrap-same-uid"):
        inner = _bwrap_argv(cfg, work, tmp, f"{SANDBOX_WORK}/main.py")
        if level == "bwrap":
            return Launch(
                level, [*limits, *_setpriv(uid), *inner], uid, True, work, SANDBOX_WORK, SANDBOX_TMP
            )
        return Launch(level, [*limits, *inner], None, True, work, SANDBOX_WORK, SANDBOX_TMP)
    main = os.path.join(work, "main.py")
    if level == "unshare":
        unshare = [_tool("unshare"), "--net", "--pid", "--fork", "--kill-child", "--"]
        return Launch(level, [*limits, *unshare, *_setpriv(uid), *py, main], uid, True, work, work, tmp)
    if level == "uid":
        return Launch(level, [*limits, *_setpriv(uid), *py, main], uid, False, work, work, tmp)
    if level == "unsafe":
        return Launch(level, [*limits, *py, main], None, False, work, work, tmp)
    raise ValueError(f"unknown isolation level {level!r}")


ZYGOTE_INSIDE = "/.verl_sod_zygote.py"
#: RLIMIT_CPU of a warm-pool zygote itself (each run lowers its own to the run's limit).
ZYGOTE_CPU_S = 7 * 86400.0


def build_zygote_launch(level: str, cfg: SandboxConfig, slot: int, run_dir: str, source: str) -> Launch:
    """The chain of :func:`build_launch` at a bwrap level, running the warm-pool zygote ``source``.

    The zygote (a host file, bound read-only at :data:`ZYGOTE_INSIDE`) runs as the namespace's
    pid 1 (``--as-pid-1``): programs it forks cannot signal it, and its death ends the namespace.
    """
    if level not in ("bwrap", "bwrap-same-uid"):
        raise ValueError(f"the warm pool needs a bwrap isolation level, not {level!r}")
    work, tmp = os.path.join(run_dir, "work"), os.path.join(run_dir, "tmp")
    extra = ("--as-pid-1", "--ro-bind", source, ZYGOTE_INSIDE)
    inner = _bwrap_argv(cfg, work, tmp, ZYGOTE_INSIDE, extra)
    limits = prlimit_prefix(cfg, level, ZYGOTE_CPU_S)
    if level == "bwrap":
        uid = cfg.base_uid + slot
        return Launch(level, [*limits, *_setpriv(uid), *inner], uid, True, work, SANDBOX_WORK, SANDBOX_TMP)
    return Launch(level, [*limits, *inner], None, True, work, SANDBOX_WORK, SANDBOX_TMP)


def sandbox_env(launch: Launch) -> dict[str, str]:
    """The whole environment of a sandboxed program (nothing is inherited)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": launch.workdir_inside,
        "TMPDIR": launch.tmpdir_inside,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def prepare_run_dir(work_root: str, slot: int, uid: int | None) -> str:
    """A fresh ``run_dir`` with ``work/``, ``tmp/`` and ``shm/`` owned by ``uid`` (mode 0700)."""
    run_dir = tempfile.mkdtemp(prefix=f"slot{slot}-", dir=work_root)
    os.chmod(run_dir, 0o711)
    for sub in ("work", "tmp", "shm"):
        path = os.path.join(run_dir, sub)
        os.mkdir(path, 0o700)
        if uid is not None:
            os.chown(path, uid, uid)
    return run_dir


def ensure_work_root(path: str) -> None:
    """Create ``path`` 0711 owned by us; refuse one that someone else could have planted."""
    os.makedirs(path, mode=0o711, exist_ok=True)
    st = os.lstat(path)
    if os.path.islink(path) or st.st_uid != os.geteuid():
        raise PermissionError(f"sandbox work_root {path} is a symlink or not owned by uid {os.geteuid()}")
    os.chmod(path, 0o711)
    if os.geteuid() == 0:  # slot uids must be able to traverse every ancestor
        parent = os.path.dirname(os.path.abspath(path))
        while True:
            if not os.stat(parent).st_mode & 0o001:
                raise PermissionError(
                    f"sandbox work_root {path}: ancestor {parent} is not searchable by other users "
                    "(needs o+x), so the per-slot uids cannot reach their work directories"
                )
            if parent == "/":
                break
            parent = os.path.dirname(parent)


class SandboxUnavailableError(RuntimeError):
    """No isolation level that the configuration allows works on this machine."""
