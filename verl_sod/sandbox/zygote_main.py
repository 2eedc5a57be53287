"""The warm-pool zygote: runs INSIDE the sandbox (bubblewrap, slot uid, pid 1), stdlib only.

The host copies this file into the zygote's run directory, binds it read-only at
``/.verl_sod_zygote.py`` and starts ``python3 -I -B -u /.verl_sod_zygote.py`` through the same
prlimit/setpriv/bwrap chain as a cold run, plus ``--as-pid-1``. It cannot import ``verl_sod``.
Protocol on the zygote's stdin/stdout, one JSON object per line:

- host -> zygote once: settings ``{"imports", "cap", "kill_at", "memory_bytes", "fsize_bytes",
  "nproc", "nofile"}``; zygote -> host: ``{"ready": true}`` or ``{"ready": false, "error": ...}``;
- host -> zygote per run: ``{"code": str, "stdin": str | null, "timeout": float}``;
- zygote -> host per run: ``{"rc", "killed", "out", "out_total", "err", "err_total", "left"}``
  (``out``/``err``: base64 of the kept bytes; ``left``: the run left something behind).

Why pid 1: from inside its pid namespace, the init process only receives signals it installed a
handler for, and this one installs none, so a program cannot SIGKILL or SIGSTOP its zygote; the
kernel makes every orphan our child; ``kill(-1, SIGKILL)`` from pid 1 atomically kills everything
else in the namespace; and if the zygote dies, the kernel kills the whole namespace. The zygote is
also non-dumpable, so a same-uid child cannot ptrace it or open ``/proc/1/mem`` or ``/proc/1/fd``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import gc
import json
import math
import os
import resource
import selectors
import signal
import stat
import sys
import threading
import time
import types
from typing import Any

PR_SET_DUMPABLE = 4
READ_CHUNK = 65536
DRAIN_WAIT_S = 0.5
WIPE_DIRS = ("/work", "/tmp", "/dev/shm")
WORK = "/work"
KEYCTL_SYSCALL = {"x86_64": 250, "aarch64": 219}
SYSV_IPC = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")
_HANDLERS: dict[int, Any] = {}  # the interpreter's own signal dispositions, restored in each child


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _read_line(fd: int, pending: bytearray) -> bytes | None:
    while b"\n" not in pending:
        data = os.read(fd, READ_CHUNK)
        if not data:
            return None
        pending += data
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _limit_child(settings: dict[str, Any], timeout: float) -> None:
    """The same rlimits a cold run gets from prlimit (CPU: ceil(timeout) + 1 of slack)."""
    cpu = math.ceil(timeout) + 1
    limits = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, settings["memory_bytes"], settings["memory_bytes"]),
        (resource.RLIMIT_FSIZE, settings["fsize_bytes"], settings["fsize_bytes"]),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, settings["nofile"], settings["nofile"]),
        (resource.RLIMIT_MSGQUEUE, 0, 0),  # POSIX queues would outlive the run in this ipc ns
    ]
    if settings["nproc"]:
        limits.append((resource.RLIMIT_NPROC, settings["nproc"], settings["nproc"]))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))


def _child(main: str, fds: tuple[int, int, int], settings: dict[str, Any], timeout: float) -> None:
    """In the forked child: becomes the program; never returns."""
    rc = 70
    try:
        _prctl(PR_SET_DUMPABLE, 1)  # as a fresh interpreter: its own /proc/self, not root's
        for sig, handler in _HANDLERS.items():
            signal.signal(sig, handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 65536)
        _limit_child(settings, timeout)
        os.chdir(WORK)
        for name in ("random", "numpy.random"):  # forked children would share the zygote's seed
            module = sys.modules.get(name)
            if module is not None:
                module.seed()
        gc.unfreeze()
        rc = _exec_main(main)
    except BaseException:  # the sandbox's own set-up failed
        try:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(rc)
    os._exit(rc)


def _exec_main(main: str) -> int:
    """Run ``main`` the way ``python -I -B -u main`` would and return the exit status."""
    with open(main, encoding="utf-8") as fh:
        code = fh.read()
    module = types.ModuleType("__main__")
    module.__file__ = main
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [main]  # sys.path unchanged: -I implies safe_path (no script directory)
    rc = 0
    try:
        exec(compile(code, main, "exec"), module.__dict__)
    except SystemExit as exc:
        rc = _exit_status(exc.code)
    except BaseException as exc:  # without this frame, as ``python main.py`` shows it
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        rc = -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    join_threads = threading._shutdown  # type: ignore[attr-defined]  # CPython's exit hook; not in typeshed
    for step in (join_threads, atexit._run_exitfuncs, sys.stdout.flush, sys.stderr.flush):
        try:
            step()
        except SystemExit as exc:
            rc = _exit_status(exc.code)
        except BaseException:
            rc = rc or 120
    if rc == -signal.SIGINT:  # as CPython: die by SIGINT after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return rc


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(BaseException):
        print(code, file=sys.stderr)
    return 1


def _sweep() -> bool:
    """Kill every other process of the namespace, atomically; True if there was any still running.
    (As pid 1, every orphan of the namespace is our child: finished ones are reaped first.)"""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        while True:  # SIGKILL cannot be resisted: wait for all of them
            os.waitpid(-1, 0)
    return True


def _wipe(path: str) -> bool:
    """Empty ``path`` (the program may have made entries read-only); True if it is now empty."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, stat.S_IRWXU)
                _wipe(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    try:
        return not os.listdir(path)
    except OSError:
        return False


def _fingerprint() -> dict[str, Any]:
    """What a run could change outside the wiped directories: /dev's entries (a tmpfs the program
    may write), the mode, owner and extended attributes of the wiped directories themselves, and
    the keys visible to the slot uid."""
    marks: dict[str, Any] = {}
    for path in (*WIPE_DIRS, "/dev", "/dev/pts"):
        try:
            st = os.lstat(path)
            marks[path] = (st.st_ino, st.st_mode, st.st_uid, tuple(sorted(os.listxattr(path))))
        except OSError:
            marks[path] = None
    marks["keys"] = _keyrings()
    for top in ("/dev", "/dev/pts"):
        try:
            for entry in os.scandir(top):
                st = entry.stat(follow_symlinks=False)
                marks[entry.path] = (st.st_ino, st.st_mode, st.st_uid, st.st_rdev)
        except OSError:
            marks[top + "/"] = None
    return marks


def _keyrings() -> list[bytes] | None:
    """Links in the session, user and user-session keyrings (not ``/proc/keys``: it also lists
    the keys of dead namespaces of this uid until the kernel collects them)."""
    number = KEYCTL_SYSCALL.get(os.uname().machine)
    if number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    links = []
    buf = ctypes.create_string_buffer(16384)
    for ring in (-3, -4, -5):  # KEY_SPEC_SESSION_KEYRING, _USER_KEYRING, _USER_SESSION_KEYRING
        size = libc.syscall(number, 11, ring, buf, len(buf))  # KEYCTL_READ
        links.append(buf.raw[: min(size, len(buf))] if size >= 0 else b"-%d" % ctypes.get_errno())
    return links


def _ipc_left() -> bool:
    """True if a System V shared memory segment, queue or semaphore set outlived the run."""
    for path in SYSV_IPC:
        try:
            with open(path) as fh:
                if len(fh.read().splitlines()) > 1:
                    return True
        except OSError:
            continue
    return False


class _Relay:
    """Feeds the child's stdin and collects its capped stdout/stderr until exit, time-out or flood."""

    def __init__(self, pid: int, fds: tuple[int, int, int], stdin: bytes, settings: dict[str, Any]) -> None:
        self.pid, self.cap, self.kill_at = pid, settings["cap"], settings["kill_at"]
        self.in_w, self.data, self.pos = fds[0], stdin or b"", 0
        self.kept = {fds[1]: bytearray(), fds[2]: bytearray()}
        self.total = {fds[1]: 0, fds[2]: 0}
        self.out_fd, self.err_fd = fds[1], fds[2]
        self.sel = selectors.DefaultSelector()
        self.pidfd = os.pidfd_open(pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ)
        for fd in self.kept:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        if self.in_w >= 0:
            os.set_blocking(self.in_w, False)
            self.sel.register(self.in_w, selectors.EVENT_WRITE)

    def _close_stdin(self) -> None:
        if self.in_w >= 0:
            self.sel.unregister(self.in_w)
            os.close(self.in_w)
            self.in_w = -1

    def _write(self) -> None:
        try:
            self.pos += os.write(self.in_w, self.data[self.pos : self.pos + READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the program stopped reading stdin
            self.pos = len(self.data)
        if self.pos >= len(self.data):
            self._close_stdin()

    def _read(self, fd: int) -> str:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return ""
        if not chunk:
            self.sel.unregister(fd)
            return ""
        self.total[fd] += len(chunk)
        room = self.cap - len(self.kept[fd])
        if room > 0:
            self.kept[fd] += chunk[:room]
        return "output" if self.total[fd] > self.kill_at else ""

    def until_exit(self, deadline: float) -> str:
        """Empty once the child has exited, else the kill reason ("timeout" or "output")."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            for key, _ in self.sel.select(remaining):
                if key.fd == self.pidfd:
                    return ""
                if key.fd == self.in_w:
                    self._write()
                elif key.fd in self.kept and self._read(key.fd):
                    return "output"

    def drain(self) -> None:
        """After every writer is dead: read what is left in the pipes, then close everything."""
        self._close_stdin()
        self.sel.unregister(self.pidfd)
        os.close(self.pidfd)
        until = time.monotonic() + DRAIN_WAIT_S
        while self.sel.get_map():
            events = self.sel.select(max(0.0, until - time.monotonic()))
            if not events:
                break
            for key, _ in events:
                self._read(key.fd)
        self.sel.close()
        for fd in self.kept:
            os.close(fd)


def _run_one(req: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    timeout = float(req["timeout"])
    stdin = req.get("stdin")
    main = os.path.join(WORK, "main.py")
    with open(main, "w", encoding="utf-8") as fh:
        fh.write(req["code"])
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(main, (in_r, out_w, err_w), settings, timeout)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    if stdin is None:
        os.close(in_w)
        in_w = -1
    data = stdin.encode("utf-8", errors="replace") if stdin is not None else b""
    relay = _Relay(pid, (in_w, out_r, err_r), data, settings)
    killed = relay.until_exit(start + timeout)
    if killed:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    left = _sweep()
    relay.drain()
    clean = all([_wipe(path) for path in WIPE_DIRS])
    return {
        "rc": None if killed else os.waitstatus_to_exitcode(status),
        "killed": killed,
        "out": base64.b64encode(bytes(relay.kept[out_r])).decode("ascii"),
        "out_total": relay.total[out_r],
        "err": base64.b64encode(bytes(relay.kept[err_r])).decode("ascii"),
        "err_total": relay.total[err_r],
        "left": bool(left or not clean or _ipc_left() or _fingerprint() != settings["marks"]),
    }


def _start(pin: int, pout: int) -> tuple[dict[str, Any] | None, bytearray]:
    """Read the settings, harden, pre-import; return the settings or None on failure."""
    pending = bytearray()
    line = _read_line(pin, pending)
    if line is None:
        return None, pending
    try:
        settings = json.loads(line)
        _prctl(PR_SET_DUMPABLE, 0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
            _HANDLERS[sig] = signal.getsignal(sig)
            signal.signal(sig, signal.SIG_IGN)  # no handler: pid 1 then never gets these
        for name in settings["imports"]:
            __import__(name)
        for path in WIPE_DIRS:
            _wipe(path)
        settings["marks"] = _fingerprint()
        gc.collect()
        gc.freeze()  # fewer copy-on-write pages in each child
    except BaseException as exc:
        reply = {"ready": False, "error": f"{type(exc).__name__}: {exc}"}
        _write_all(pout, (json.dumps(reply) + "\n").encode())
        return None, pending
    _write_all(pout, b'{"ready": true}\n')
    return settings, pending


def main() -> int:
    pin, pout = os.dup(0), os.dup(1)  # the protocol; fds 0-1 become /dev/null, children get pipes
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    settings, pending = _start(pin, pout)
    if settings is None:
        return 1
    while True:
        line = _read_line(pin, pending)
        if line is None:
            return 0
        reply = _run_one(json.loads(line), settings)
        _write_all(pout, (json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    sys.exit(main())
