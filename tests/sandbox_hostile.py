"""Hostile programs shared by the cold (``test_sandbox_local_on_cpu.py``) and warm
(``test_sandbox_warm_on_cpu.py``) sandbox tests, as ``HostileSuite``, which each of those files
subclasses as ``TestHostile``. Each test asserts that one threat is contained and, where it can,
that the sandbox still runs programs afterwards.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import select
import shutil
import socket
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from verl_sod.sandbox import Sandbox, SandboxConfig

OpenSandbox = Callable[..., AbstractContextManager[Sandbox]]


def scratch_dir(prefix: str) -> Iterator[str]:
    """A world-traversable directory under /tmp (pytest's tmp_path is 0700, closed to slot uids)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
    drop_cache_entries(path)


def drop_cache_entries(scratch: str) -> None:
    """Remove the isolation-cache entries of work roots under ``scratch`` (they would accumulate)."""
    from verl_sod.sandbox import level_cache

    for path in glob.glob(os.path.join("/run/lock", level_cache.PREFIX + "*.json")):
        try:
            with open(path) as fh:
                if json.load(fh)["key"]["work_root"].startswith(scratch):
                    os.unlink(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue


def make_config(scratch: str, **settings: object) -> SandboxConfig:
    """A sandbox config with a fresh work root under ``scratch``."""
    settings.setdefault("work_root", os.path.join(scratch, f"root-{uuid.uuid4().hex[:8]}"))
    return SandboxConfig(**settings)  # type: ignore[arg-type]


def settled(find: Callable[[], dict[int, list[int]]], settle_s: float = 1.0) -> dict[int, list[int]]:
    """``find()`` (slot uid -> live pids), after up to ``settle_s`` for processes the kernel is
    still tearing down."""
    deadline = time.monotonic() + settle_s
    while (found := find()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def make_host_dir(scratch: str) -> str:
    """A host directory any uid could read and write, holding a world-readable secret."""
    path = os.path.join(scratch, f"host-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    os.chmod(path, 0o777)
    with open(os.path.join(path, "secret.txt"), "w") as fh:
        fh.write("HOST-SECRET-42")
    os.chmod(os.path.join(path, "secret.txt"), 0o644)
    return path


def check_setsid_double_fork_child_swept(
    sb: Sandbox, host_dir: str, leftovers: Callable[[], dict[int, list[int]]]
) -> None:
    code = f"""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1.0)
            for path in ("/work/marker", "/tmp/marker", {host_dir + "/marker"!r}):
                try:
                    open(path, "w").write("alive")
                except OSError:
                    pass
        os._exit(0)
    time.sleep(0.2)
    print("parent exits")
    """
    r = sb.run_sync(textwrap.dedent(code))
    assert r.status == "ok" and r.stdout == "parent exits\n"
    assert leftovers() == {}
    time.sleep(1.5)
    r = sb.run_sync("import os\nprint(sorted(os.listdir('/work')), os.listdir('/tmp'))")
    assert (r.status, r.stdout) == ("ok", "['main.py'] []\n")
    assert not os.path.exists(os.path.join(host_dir, "marker"))


class HostileSuite:
    """The subclass's module supplies the fixtures ``scratch`` (a world-traversable directory),
    ``sandbox`` (shared, several slots, ``max_processes=16``) and ``open_sandbox``
    (``open_sandbox(**config_changes)``: a context manager giving a fresh sandbox); the subclass
    sets ``leftovers`` (live slot-uid processes that should not exist; ``{}`` when clean)."""

    leftovers: Callable[[], dict[int, list[int]]]

    @pytest.fixture
    def host_dir(self, scratch: str) -> str:
        return make_host_dir(scratch)

    def test_setsid_double_fork_child_is_swept(self, open_sandbox: OpenSandbox, host_dir: str) -> None:
        with open_sandbox() as sb:
            check_setsid_double_fork_child_swept(sb, host_dir, self.leftovers)

    def test_twenty_concurrent_runs(self, sandbox: Sandbox) -> None:
        code = "import os, sys\nn = int(sys.stdin.read())\nprint(n * n, os.getuid())"

        async def main() -> list:
            return await asyncio.gather(*(sandbox.run(code, stdin=str(i)) for i in range(20)))

        results = asyncio.run(main())
        assert [r.status for r in results] == ["ok"] * 20
        assert [int(r.stdout.split()[0]) for r in results] == [i * i for i in range(20)]
        uids = {int(r.stdout.split()[1]) for r in results}
        base = sandbox.config.base_uid
        assert uids <= set(range(base, base + sandbox.config.num_slots)) and len(uids) > 1

    def test_stdin_round_trip(self, sandbox: Sandbox) -> None:
        r = sandbox.run_sync(
            "import sys\ndata = sys.stdin.read()\nprint(len(data), data[:5][::-1])", stdin="hello" * 200_000
        )
        assert (r.status, r.stdout) == ("ok", "1000000 olleh\n")
        assert sandbox.run_sync("print('ignores stdin')", stdin="x" * 5_000_000).status == "ok"  # no deadlock
        r = sandbox.run_sync("import sys\nprint(repr(sys.stdin.read()))")
        assert (r.status, r.stdout) == ("ok", "''\n")

    def test_network_is_unreachable(self, sandbox: Sandbox) -> None:
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

    def test_host_files_are_invisible(self, sandbox: Sandbox, host_dir: str) -> None:
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

    def test_cannot_write_outside_workdir(self, sandbox: Sandbox, host_dir: str) -> None:
        tmp_target = f"/tmp/verl_sod_escape_{uuid.uuid4().hex}"
        targets = [
            os.path.join(host_dir, "evil.txt"),
            tmp_target,
            "/etc/evil.txt",
            "/usr/evil.txt",
            "/evil.txt",
        ]
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
        print("cwd", os.getcwd(), sorted(os.listdir(".")))
        """
        r = sandbox.run_sync(textwrap.dedent(code))
        assert r.status == "ok", r.stderr
        wrote = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("wrote ")]
        assert set(wrote) <= {tmp_target}, "only the sandbox's private /tmp may be written"
        assert "cwd /work ['inside.txt', 'main.py']" in r.stdout
        for path in targets:
            assert not os.path.exists(path), f"sandbox wrote host file {path}"
        assert sorted(os.listdir(host_dir)) == ["secret.txt"]

    def test_fork_bomb_is_bounded(self, sandbox: Sandbox) -> None:
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
        assert r.status == "ok" and 0 < int(r.stdout) < sandbox.config.max_processes, (r.stdout, r.stderr)
        bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
        start = time.monotonic()
        r = sandbox.run_sync(bomb, timeout_s=1.5)
        assert r.status == "timeout" and time.monotonic() - start < 6
        assert sandbox.run_sync("print('still fine')").stdout == "still fine\n"

    def test_grandchild_holding_stdout_does_not_hang(self, sandbox: Sandbox) -> None:
        code = "import subprocess\nsubprocess.Popen(['sleep', '60'])\nprint('bye')\n"
        start = time.monotonic()
        r = sandbox.run_sync(code, timeout_s=20)
        assert r.status == "ok" and r.stdout == "bye\n" and time.monotonic() - start < 5

    def test_memory_hog_is_stopped(self, open_sandbox: OpenSandbox) -> None:
        code = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))\n"
        with open_sandbox(memory_mb=256) as sb:
            r = sb.run_sync(code)
            assert r.status == "error" and "MemoryError" in r.stderr
            assert sb.run_sync("print(len(bytearray(100 << 20)))").stdout == f"{100 << 20}\n"

    def test_busy_loop_and_sleep_time_out(self, sandbox: Sandbox) -> None:
        for code in ("while True:\n    pass\n", "import time\nprint('start', flush=True)\ntime.sleep(60)\n"):
            start = time.monotonic()
            r = sandbox.run_sync(code, timeout_s=1.0)
            elapsed = time.monotonic() - start
            assert r.status == "timeout" and r.exit_code is None and elapsed < 3.5, (code, r, elapsed)
            assert "wall-clock limit" in r.stderr
        assert r.stdout == "start\n", "output printed before the time-out is kept"

    def test_output_flood_is_truncated(self, sandbox: Sandbox) -> None:
        cap = sandbox.config.max_output_bytes
        r = sandbox.run_sync("import sys\nsys.stdout.write('y' * 300_000)\n")
        assert r.status == "ok" and r.stdout == "y" * cap + f"...[truncated {300_000 - cap} bytes]"
        start = time.monotonic()
        r = sandbox.run_sync("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout_s=30)
        assert time.monotonic() - start < 5 and r.status == "error"
        assert r.stdout.startswith("x" * cap) and "...[truncated at least" in r.stdout
        assert len(r.stdout) < cap + 100 and "output passed" in r.stderr

    def test_file_size_limit(self, sandbox: Sandbox) -> None:
        r = sandbox.run_sync("open('big.bin', 'wb').write(b'0' * (32 << 20))\n")
        assert r.status == "error" and "File too large" in r.stderr

    def test_disk_filling_is_stopped(self, open_sandbox: OpenSandbox) -> None:
        fill = "i = 0\nwhile True:\n    open(f'DIR/f{i}', 'wb').write(b'0' * (1 << 20))\n    i += 1\n"
        many = "import os\ni = 0\nwhile True:\n    open(f'/work/e{i}', 'w').close()\n    i += 1\n"
        with open_sandbox(max_workdir_mb=32, max_workdir_files=2000, timeout_s=20) as sb:
            work_root = sb.config.work_root
            self.test_file_size_limit(sb)
            for code in (fill.replace("DIR", "/work"), fill.replace("DIR", "/dev/shm"), many):
                start = time.monotonic()
                r = sb.run_sync(code)
                assert r.status == "error" and "work directory passed" in r.stderr, (code, r)
                assert time.monotonic() - start < 5
                assert sb.run_sync("import os\nprint(os.listdir('.'))").stdout == "['main.py']\n"
        assert os.listdir(work_root) == []

    def test_cancelled_run_leaves_nothing(self, sandbox: Sandbox) -> None:
        async def main() -> None:
            task = asyncio.create_task(sandbox.run("import time\ntime.sleep(60)\n"))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert sandbox.run_sync("print('after cancel')").stdout == "after cancel\n"
