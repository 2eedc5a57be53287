"""Local sandbox: normal programs, and hostile programs with the *host* checked afterwards.

Needs root (to switch to per-slot uids) and bubblewrap; without them these tests fail, on
purpose, with the install command. Every test ends by asserting that no live process of any slot
uid is left on the host. The only network traffic is to 127.0.0.1 listeners opened here.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from verl_sod.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError
from verl_sod.sandbox.procs import processes_of_uid

BASE_UID = 62000
SLOTS = 4
SLOT_UIDS = range(BASE_UID, BASE_UID + SLOTS)


def _require_bwrap_and_root() -> None:
    if shutil.which("bwrap") is None:
        pytest.fail(
            "bubblewrap (bwrap) is not installed, and the local sandbox needs it: "
            "run `apt-get install -y bubblewrap` (as `make install` does)",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the local sandbox tests run as root (to switch to per-slot uids)", pytrace=False)


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    """A world-traversable directory under /tmp (pytest's tmp_path is 0700, closed to slot uids)."""
    path = tempfile.mkdtemp(prefix="verl_sod_sbtest-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(scratch: str, **changes: object) -> SandboxConfig:
    work_root = os.path.join(scratch, f"root-{uuid.uuid4().hex[:8]}")
    defaults: dict[str, object] = {"num_slots": SLOTS, "base_uid": BASE_UID, "work_root": work_root}
    defaults.update(changes)
    return SandboxConfig(**defaults)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sandbox(scratch: str) -> Iterator[Sandbox]:
    _require_bwrap_and_root()
    with Sandbox(_config(scratch, timeout_s=10.0, max_processes=16)) as sb:
        yield sb


def _live_slot_processes(settle_s: float = 1.0) -> dict[int, list[int]]:
    """Live processes of the slot uids, after up to ``settle_s`` for ones the kernel is tearing down."""
    deadline = time.monotonic() + settle_s
    while True:
        found = {uid: processes_of_uid(uid, include_zombies=False) for uid in SLOT_UIDS}
        found = {uid: pids for uid, pids in found.items() if pids}
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    assert _live_slot_processes() == {}, "a sandboxed process outlived its run"


@pytest.fixture
def host_dir(scratch: str) -> Iterator[str]:
    """A host directory any uid could read and write, holding a world-readable secret."""
    path = os.path.join(scratch, f"host-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    os.chmod(path, 0o777)
    with open(os.path.join(path, "secret.txt"), "w") as fh:
        fh.write("HOST-SECRET-42")
    os.chmod(os.path.join(path, "secret.txt"), 0o644)
    yield path


# ---------------------------------------------------------------- set-up and normal programs


def test_bwrap_installed_and_selected(sandbox: Sandbox) -> None:
    assert sandbox.isolation == "bwrap"


def test_stdout_stderr_exit_code(sandbox: Sandbox) -> None:
    code = "import sys\nprint('out', 6 * 7)\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    r = sandbox.run_sync(code)
    assert (r.status, r.stdout, r.stderr, r.exit_code) == ("error", "out 42\n", "err\n", 3)
    r = sandbox.run_sync("print('fine')")
    assert (r.status, r.stdout, r.exit_code) == ("ok", "fine\n", 0)
    assert 0 < r.duration_s < 5
    r = sandbox.run_sync("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert (r.status, r.exit_code) == ("error", -9)


def test_stdin_round_trip(sandbox: Sandbox) -> None:
    r = sandbox.run_sync(
        "import sys\ndata = sys.stdin.read()\nprint(len(data), data[:5][::-1])", stdin="hello" * 200_000
    )
    assert (r.status, r.stdout) == ("ok", "1000000 olleh\n")
    r = sandbox.run_sync("print('ignores stdin')", stdin="x" * 5_000_000)  # never read: no deadlock
    assert r.status == "ok"


def test_exception_gives_error_with_traceback(sandbox: Sandbox) -> None:
    r = sandbox.run_sync("def f():\n    return 1 / 0\nf()\n")
    assert r.status == "error" and r.exit_code == 1
    assert "Traceback (most recent call last)" in r.stderr and "ZeroDivisionError" in r.stderr


def test_environment_is_scrubbed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERL_SOD_HOST_SECRET", "hunter2")
    r = sandbox.run_sync("import os, sys\nprint(sorted(os.environ), sys.flags.isolated)")
    assert r.status == "ok" and "VERL_SOD_HOST_SECRET" not in r.stdout and r.stdout.rstrip().endswith(" 1")
    assert "'HOME'" in r.stdout and "'PATH'" in r.stdout


def test_run_sync_inside_event_loop(sandbox: Sandbox) -> None:
    async def agent() -> str:
        return sandbox.run_sync("print('nested')").stdout

    assert asyncio.run(agent()) == "nested\n"


def test_twenty_concurrent_runs(sandbox: Sandbox) -> None:
    code = "import os, sys\nn = int(sys.stdin.read())\nprint(n * n, os.getuid())"

    async def main() -> list:
        return await asyncio.gather(*(sandbox.run(code, stdin=str(i)) for i in range(20)))

    results = asyncio.run(main())
    assert [r.status for r in results] == ["ok"] * 20
    squares = [int(r.stdout.split()[0]) for r in results]
    assert squares == [i * i for i in range(20)]
    uids = {int(r.stdout.split()[1]) for r in results}
    assert uids <= set(range(BASE_UID, BASE_UID + SLOTS)) and len(uids) > 1


# ---------------------------------------------------------------- hostile programs


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    code = f"""
    import socket
    for host in ("127.0.0.1", "localhost", "10.0.0.1"):
        try:
            socket.create_connection((host, {port}), timeout=1).close()
            print("CONNECTED", host)
        except OSError as exc:
            print("blocked", host, type(exc).__name__)
    """
    try:
        r = sandbox.run_sync(textwrap.dedent(code))
        readable, _, _ = select.select([listener], [], [], 0.3)
    finally:
        listener.close()
    assert r.status == "ok" and "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3
    assert readable == [], "the host listener received a connection from the sandbox"


def test_host_files_are_invisible(sandbox: Sandbox, host_dir: str) -> None:
    code = f"""
    for path in ("/etc/shadow", "/etc/passwd", {host_dir + "/secret.txt"!r}, "/root/.bashrc"):
        try:
            print("READ", path, open(path).read()[:40])
        except OSError as exc:
            print("denied", path, type(exc).__name__)
    """
    r = sandbox.run_sync(textwrap.dedent(code))
    assert r.status == "ok", r.stderr
    assert "READ" not in r.stdout and "HOST-SECRET-42" not in r.stdout and r.stdout.count("denied") == 4


def test_cannot_write_outside_workdir(sandbox: Sandbox, host_dir: str) -> None:
    tmp_target = f"/tmp/verl_sod_escape_{uuid.uuid4().hex}"
    targets = [os.path.join(host_dir, "evil.txt"), tmp_target, "/etc/evil.txt", "/usr/evil.txt", "/evil.txt"]
    code = f"""
    import os
    for path in {targets!r}:
        try:
            with open(path, "w") as fh:
                fh.write("pwned")
            print("wrote", path)
        except OSError as exc:
            print("denied", path, type(exc).__name__)
    open("inside.txt", "w").write("ok")  # the work directory itself is writable
    print("cwd", os.getcwd(), os.listdir("."))
    """
    r = sandbox.run_sync(textwrap.dedent(code))
    assert r.status == "ok", r.stderr
    assert "inside.txt" in r.stdout
    for path in targets:
        assert not os.path.exists(path), f"sandbox wrote host file {path}"
    assert sorted(os.listdir(host_dir)) == ["secret.txt"]


def test_fork_bomb_is_bounded(sandbox: Sandbox) -> None:
    count = """
    import os, time
    n = 0
    while True:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    print(n)
    """
    r = sandbox.run_sync(textwrap.dedent(count))
    assert r.status == "ok" and 0 < int(r.stdout) < 16, (r.stdout, r.stderr)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    r = sandbox.run_sync(bomb, timeout_s=1.5)
    assert r.status == "timeout" and time.monotonic() - start < 6


def test_setsid_double_fork_child_is_killed(scratch: str, host_dir: str) -> None:
    _require_bwrap_and_root()
    cfg = _config(scratch, keep_workdirs=True)
    code = f"""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1.0)
            for path in ("/work/marker", {host_dir + "/marker"!r}):
                try:
                    open(path, "w").write("alive")
                except OSError:
                    pass
        os._exit(0)
    time.sleep(0.2)
    print("parent exits")
    """
    with Sandbox(cfg) as sb:
        r = sb.run_sync(textwrap.dedent(code))
    assert r.status == "ok" and r.stdout == "parent exits\n"
    assert _live_slot_processes() == {}
    time.sleep(1.5)
    assert glob.glob(os.path.join(cfg.work_root, "*", "work", "main.py")), "kept work dir not found"
    assert glob.glob(os.path.join(cfg.work_root, "*", "work", "marker")) == []
    assert not os.path.exists(os.path.join(host_dir, "marker"))


def test_grandchild_holding_stdout_does_not_hang(sandbox: Sandbox) -> None:
    code = "import subprocess\nsubprocess.Popen(['sleep', '60'])\nprint('bye')\n"
    start = time.monotonic()
    r = sandbox.run_sync(code, timeout_s=20)
    assert r.status == "ok" and r.stdout == "bye\n" and time.monotonic() - start < 5


def test_memory_hog_is_stopped(scratch: str) -> None:
    _require_bwrap_and_root()
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))\n"
    with Sandbox(_config(scratch, memory_mb=256)) as sb:
        r = sb.run_sync(code)
    assert r.status == "error" and "MemoryError" in r.stderr


def test_busy_loop_and_sleep_time_out(sandbox: Sandbox) -> None:
    for code in ("while True:\n    pass\n", "import time\nprint('start', flush=True)\ntime.sleep(60)\n"):
        start = time.monotonic()
        r = sandbox.run_sync(code, timeout_s=1.0)
        elapsed = time.monotonic() - start
        assert r.status == "timeout" and r.exit_code is None and elapsed < 3.5, (code, r, elapsed)
    assert r.stdout == "start\n", "output printed before the time-out is kept"


def test_output_flood_is_truncated(sandbox: Sandbox) -> None:
    cap = sandbox.config.max_output_bytes
    r = sandbox.run_sync("import sys\nsys.stdout.write('y' * 300_000)\n")
    assert r.status == "ok" and r.stdout == "y" * cap + f"...[truncated {300_000 - cap} bytes]"
    start = time.monotonic()
    r = sandbox.run_sync("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout_s=30)
    assert time.monotonic() - start < 5 and r.status == "error"
    assert r.stdout.startswith("x" * cap) and "...[truncated at least" in r.stdout
    assert len(r.stdout) < cap + 100 and "output passed" in r.stderr


def test_file_size_limit(sandbox: Sandbox) -> None:
    r = sandbox.run_sync("open('big.bin', 'wb').write(b'0' * (32 << 20))\n")
    assert r.status == "error" and "File too large" in r.stderr


def test_disk_filling_is_stopped(scratch: str) -> None:
    _require_bwrap_and_root()
    fill = "i = 0\nwhile True:\n    open(f'DIR/f{i}', 'wb').write(b'0' * (1 << 20))\n    i += 1\n"
    many = "import os\ni = 0\nwhile True:\n    open(f'/work/e{i}', 'w').close()\n    i += 1\n"
    cfg = _config(scratch, max_workdir_mb=32, max_workdir_files=2000, timeout_s=20)
    with Sandbox(cfg) as sb:
        for code in (fill.replace("DIR", "/work"), fill.replace("DIR", "/dev/shm"), many):
            start = time.monotonic()
            r = sb.run_sync(code)
            assert r.status == "error" and "work directory passed" in r.stderr, (code, r)
            assert time.monotonic() - start < 5
    assert os.listdir(cfg.work_root) == []


def test_cancelled_run_leaves_nothing(sandbox: Sandbox) -> None:
    async def main() -> None:
        task = asyncio.create_task(sandbox.run("import time\ntime.sleep(60)\n"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


# ---------------------------------------------------------------- config, fallbacks, CLI


def test_config_range_checks() -> None:
    for bad in (
        {"timeout_s": 0},
        {"memory_mb": 1},
        {"num_slots": 0},
        {"backend": "docker"},
        {"python": "py"},
    ):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SandboxConfig(max_output_bytes=1 << 20, kill_output_bytes=1 << 10)


def test_unsafe_is_refused_without_flag(scratch: str) -> None:
    with pytest.raises(SandboxUnavailableError, match="allow_unsafe"):
        Sandbox(_config(scratch, isolation="unsafe"))
    with pytest.warns(RuntimeWarning, match="ALL isolation"):
        sb = Sandbox(_config(scratch, isolation="unsafe", allow_unsafe=True))
    with sb:
        r = sb.run_sync("import os\nprint(os.getuid())")
    assert (r.status, r.stdout) == ("ok", f"{os.getuid()}\n")


@pytest.mark.parametrize("level", ["unshare", "uid"])
def test_fallback_levels_warn_and_contain_processes(scratch: str, host_dir: str, level: str) -> None:
    _require_bwrap_and_root()
    code = f"""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1.0)
            open({host_dir + "/marker"!r}, "w").write("alive")
        os._exit(0)
    print("parent exits")
    """
    with pytest.warns(RuntimeWarning, match="LOST"), Sandbox(_config(scratch, isolation=level)) as sb:
        r = sb.run_sync(textwrap.dedent(code))
    assert r.status == "ok", r.stderr
    assert _live_slot_processes() == {}
    time.sleep(1.3)
    assert not os.path.exists(os.path.join(host_dir, "marker"))


def test_cli_run_prints_one_json_line(scratch: str) -> None:
    _require_bwrap_and_root()
    path = os.path.join(scratch, f"prog-{uuid.uuid4().hex[:6]}.py")
    with open(path, "w") as fh:
        fh.write("import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nsys.exit(2)\n")
    cmd = [sys.executable, "-m", "verl_sod.sandbox", "run", path, "--timeout", "5", "--memory-mb", "512"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) == {"status", "stdout", "stderr", "exit_code", "duration_s"}
    assert (result["status"], result["stdout"], result["stderr"], result["exit_code"]) == (
        "error",
        "hi\n",
        "oops\n",
        2,
    )
    doctor = subprocess.run([*cmd[:3], "doctor"], capture_output=True, text=True, timeout=120, check=False)
    assert doctor.returncode == 0 and "best isolation level is 'bwrap'" in doctor.stdout
