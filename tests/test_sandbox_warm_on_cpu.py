"""Warm interpreter pool (``SandboxConfig(warm=True)``): the hostile suite shared with the local
tests (``sandbox_hostile.py``) run through the zygote, plus the zygote's own threats (state leaking
between runs, a program killing, stopping or ptracing its zygote, the zygote dying mid-run,
recycling, shutdown).

Needs root and bubblewrap, like ``test_sandbox_local_on_cpu.py``. Every test ends by asserting
that no process of any slot uid is alive on the host except the live zygote chains of open
sandboxes (outer bubblewrap -> zygote, which is pid 1 of its namespace).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest
import sandbox_hostile as hostile

from verl_sod.sandbox import Sandbox, SandboxConfig
from verl_sod.sandbox.procs import processes_of_uid

BASE_UID = 62200
SLOTS = 4
OWN_UID = BASE_UID + SLOTS  # sandboxes made by single tests
SLOT_UIDS = range(BASE_UID, OWN_UID + SLOTS)
_OPEN: list[Sandbox] = []  # sandboxes whose zygote chains may be alive


def _require_bwrap_and_root() -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap (bwrap) is not installed: `apt-get install -y bubblewrap`", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the local sandbox tests run as root (to switch to per-slot uids)", pytrace=False)


def _has_numpy() -> bool:
    return subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0


HAS_NUMPY = _has_numpy()


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    yield from hostile.scratch_dir("verl_sod_sbwarm-")


def _config(scratch: str, **changes: object) -> SandboxConfig:
    warm_imports = ("numpy",) if HAS_NUMPY else ()
    settings = {"num_slots": 1, "base_uid": OWN_UID, "warm": True, "warm_imports": warm_imports, **changes}
    return hostile.make_config(scratch, **settings)


class _Open:
    """``with _Open(cfg) as sb``: a warm sandbox whose zygotes the leftover check tolerates."""

    def __init__(self, cfg: SandboxConfig) -> None:
        _require_bwrap_and_root()
        self.sb = Sandbox(cfg)

    def __enter__(self) -> Sandbox:
        _OPEN.append(self.sb)
        return self.sb

    def __exit__(self, *exc: object) -> None:
        self.sb.close()
        _OPEN.remove(self.sb)


@pytest.fixture(scope="module")
def sandbox(scratch: str) -> Iterator[Sandbox]:
    with _Open(_config(scratch, timeout_s=10.0, max_processes=16, num_slots=SLOTS, base_uid=BASE_UID)) as sb:
        yield sb


def _zygotes(sb: Sandbox) -> dict[int, int]:
    """Slot -> host pid of the outer bubblewrap of its live zygote."""
    return sb._backend._warm.host_pids()  # type: ignore[attr-defined]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _leftovers(settle_s: float = 1.0) -> dict[int, list[int]]:
    """Live slot-uid processes other than the zygote chains (outer bwrap -> zygote) of _OPEN."""

    def find() -> dict[int, list[int]]:
        roots = {pid for sb in _OPEN for pid in _zygotes(sb).values()}
        found: dict[int, list[int]] = {}
        for uid in SLOT_UIDS:
            for pid in processes_of_uid(uid, include_zombies=False):
                if pid not in roots and _ppid(pid) not in roots:
                    found.setdefault(uid, []).append(pid)
        return found

    return hostile.settled(find, settle_s)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    assert _leftovers() == {}, "a sandboxed process outlived its run"


# ---------------------------------------------------------------- normal programs


def test_warm_config_checks() -> None:
    assert SandboxConfig().warm is False
    for bad in ({"warm_max_runs": 0}, {"warm_imports": ("os; import x",)}, {"warm_imports": "numpy"}):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)  # type: ignore[arg-type]
    assert SandboxConfig(warm_imports=["numpy", "os.path"]).warm_imports == ("numpy", "os.path")  # type: ignore[arg-type]


def test_results_match_a_cold_interpreter(sandbox: Sandbox) -> None:
    assert sandbox.isolation == "bwrap"
    code = "import sys\nprint('out', 6 * 7)\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    r = sandbox.run_sync(code)
    assert (r.status, r.stdout, r.stderr, r.exit_code) == ("error", "out 42\n", "err\n", 3)
    assert 0 < r.duration_s < 5
    r = sandbox.run_sync("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert (r.status, r.exit_code) == ("error", -9)
    r = sandbox.run_sync("import sys\nsys.exit(137)")  # bwrap's 128+N convention, as the cold path
    assert (r.status, r.exit_code) == ("error", -9)
    r = sandbox.run_sync("def f():\n    return 1 / 0\nf()\n")
    assert r.status == "error" and r.exit_code == 1 and "ZeroDivisionError" in r.stderr
    assert r.stderr.startswith('Traceback (most recent call last):\n  File "/work/main.py", line 3')
    assert "zygote" not in r.stderr
    probe = "import os, sys\nprint(__name__, __file__, sys.argv, sys.path[0], os.getcwd())\nsys.exit('bye')"
    r = sandbox.run_sync(probe)
    assert (r.stdout, r.stderr, r.exit_code) == (
        "__main__ /work/main.py ['/work/main.py'] /usr/lib/python311.zip /work\n",
        "bye\n",
        1,
    )


def test_environment_and_descriptors(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERL_SOD_HOST_SECRET", "hunter2")
    code = "import os, sys\nprint(sorted(os.environ), sys.flags.isolated)\n"
    code += "print(sorted(os.listdir('/proc/self/fd')))"
    r = sandbox.run_sync(code)
    env, fds = r.stdout.splitlines()
    assert r.status == "ok" and "VERL_SOD_HOST_SECRET" not in env and "'HOME'" in env and env.endswith(" 1")
    assert fds == "['0', '1', '2', '3']", "the run inherited descriptors of the zygote"  # 3: listdir


def test_numpy_is_preloaded(sandbox: Sandbox) -> None:
    if not HAS_NUMPY:
        pytest.skip("no numpy for /usr/bin/python3")
    r = sandbox.run_sync(
        "import sys\nprint('numpy' in sys.modules)\nimport numpy as np\nprint(np.arange(4).sum())"
    )
    assert (r.status, r.stdout) == ("ok", "True\n6\n")


# ---------------------------------------------------------------- hostile programs (tests/sandbox_hostile.py)


@pytest.fixture
def open_sandbox(scratch: str) -> hostile.OpenSandbox:
    return lambda **changes: _Open(_config(scratch, **changes))


class TestHostile(hostile.HostileSuite):
    leftovers = staticmethod(_leftovers)


# ---------------------------------------------------------------- the zygote's own threats


def test_no_state_leaks_between_runs(scratch: str) -> None:
    first = textwrap.dedent(
        """
        import builtins, os, random, sys
        X_LEAK = 1
        builtins.LEAKED = True
        sys.modules["os"].LEAKED = True
        sys.path.append("/leak")
        for d in ("/work", "/tmp", "/dev/shm"):
            open(os.path.join(d, "left.txt"), "w").write("x")
        os.mkdir("/work/locked")
        open("/work/locked/f", "w").write("x")
        os.chmod("/work/locked", 0)
        print(random.random())
        """
    )
    second = textwrap.dedent(
        """
        import builtins, os, random, sys
        print("X_LEAK" in globals(), hasattr(builtins, "LEAKED"), hasattr(os, "LEAKED"), "/leak" in sys.path)
        print(sorted(os.listdir("/work")), os.listdir("/tmp"), os.listdir("/dev/shm"))
        print(random.random())
        """
    )
    if HAS_NUMPY:
        first += "import numpy\nnumpy.sum = lambda *a, **k: 42\nnumpy.LEAK = 1\nprint(numpy.random.rand())\n"
        second += (
            "import numpy\nprint(numpy.sum([1, 2]), hasattr(numpy, 'LEAK'))\nprint(numpy.random.rand())\n"
        )
    with _Open(_config(scratch)) as sb:
        r1 = sb.run_sync(first)
        assert r1.status == "ok", r1.stderr
        pid = _zygotes(sb)
        r2 = sb.run_sync(second)
        assert r2.status == "ok", r2.stderr
        assert _zygotes(sb) == pid, "both runs must have used the same zygote"
    lines = r2.stdout.splitlines()
    assert lines[0] == "False False False False"
    assert lines[1] == "['main.py'] [] []"
    assert lines[2] != r1.stdout.splitlines()[0], "runs share the random module's state"
    if HAS_NUMPY:
        assert lines[3] == "3 False"
        assert lines[4] != r1.stdout.splitlines()[1], "runs share numpy.random's state"


@pytest.mark.parametrize(
    "writer",
    [
        "open('/dev/leak', 'w').write('x')",  # /dev is a tmpfs the program may write
        "import os\nos.setxattr('/tmp', 'user.leak', b'x')",
        "import os\nos.chmod('/work', 0o755)",
        "import ctypes\nctypes.CDLL(None).syscall(248, b'user', b'leak', b'x', 1, -4)",  # add_key @u
        "import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.shmget(1234, 4096, 0o1600))",  # SysV shm
    ],
)
def test_state_outside_the_work_dirs_recycles_the_zygote(scratch: str, writer: str) -> None:
    with _Open(_config(scratch, warm_imports=())) as sb:
        assert sb.run_sync("pass").status == "ok"
        before = _zygotes(sb)
        assert before and sb.run_sync("pass").status == "ok" and _zygotes(sb) == before
        r = sb.run_sync(writer)
        assert r.status == "ok", r.stderr
        assert _zygotes(sb) == {}, "the zygote must be replaced after a run that left state behind"
        r = sb.run_sync("import os\nprint(os.path.exists('/dev/leak'), os.listxattr('/tmp'))")
        assert (r.status, r.stdout) == ("ok", "False []\n")


def test_posix_message_queues_are_refused(sandbox: Sandbox) -> None:
    code = "import ctypes\nrt = ctypes.CDLL('librt.so.1')\nprint(rt.mq_open(b'/leak', 0o102, 0o600, None))"
    r = sandbox.run_sync(code)
    assert (r.status, r.stdout) == ("ok", "-1\n")


def test_program_cannot_kill_stop_or_trace_its_zygote(sandbox: Sandbox) -> None:
    code = """
    import ctypes, os, signal
    print(os.getppid())
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT):
        os.kill(1, sig)
    for name in ("mem", "environ", "fd/4"):
        try:
            with open(f"/proc/1/{name}", "rb") as fh:
                fh.read(16)
            print("READ", name)
        except OSError as exc:
            print("denied", name)
    libc = ctypes.CDLL(None, use_errno=True)
    for request in (16, 0x4206):  # PTRACE_ATTACH, PTRACE_SEIZE
        print("ptrace", libc.ptrace(request, 1, None, None), ctypes.get_errno())
    print("survived")
    """
    r = sandbox.run_sync("print('warm')")
    before = _zygotes(sandbox)
    r = sandbox.run_sync(textwrap.dedent(code))
    assert r.status == "ok", r
    lines = r.stdout.splitlines()
    assert lines[0] == "1" and lines[-1] == "survived" and "READ" not in r.stdout
    assert r.stdout.count("denied") == 3 and "ptrace -1 1" in r.stdout  # EPERM
    r = sandbox.run_sync("import os\nos.system('kill -9 -1')\nprint('not reached')")
    assert (r.status, r.exit_code, r.stdout) == ("error", -9, "")  # kill(-1) spares only pid 1
    assert sandbox.run_sync("print('zygote intact')").stdout == "zygote intact\n"
    assert set(before.values()) <= set(_zygotes(sandbox).values())


def test_zygote_killed_mid_run_then_recovery(scratch: str) -> None:
    with _Open(_config(scratch)) as sb:
        assert sb.run_sync("print('warm')").stdout == "warm\n"
        outer = _zygotes(sb)[0]

        async def run_and_kill() -> object:
            task = asyncio.create_task(sb.run("import time\nprint('x', flush=True)\ntime.sleep(30)"))
            await asyncio.sleep(0.5)
            with open(f"/proc/{outer}/task/{outer}/children") as fh:
                zygote = int(fh.read().split()[0])
            os.kill(zygote, signal.SIGKILL)  # the host can: it is pid 1 only inside its namespace
            return await task

        start = time.monotonic()
        r = asyncio.run(run_and_kill())
        assert time.monotonic() - start < 5
        assert r.status == "sandbox_error" and "zygote" in r.stderr, r  # type: ignore[attr-defined]
        r = sb.run_sync("print('next run is fine')")
        assert (r.status, r.stdout) == ("ok", "next run is fine\n")
        assert _zygotes(sb)[0] != outer


def test_recycle_after_max_runs_and_after_leftovers(scratch: str) -> None:
    with _Open(_config(scratch, warm_max_runs=3, warm_imports=())) as sb:
        seen = []
        for i in range(7):
            assert sb.run_sync(f"print({i})").stdout == f"{i}\n"
            seen.append(_zygotes(sb).get(0))
        assert seen[2] is None and seen[5] is None  # runs 3 and 6 end their zygote
        assert seen[0] == seen[1] and seen[3] == seen[4] and len({seen[0], seen[3], seen[6]}) == 3
        r = sb.run_sync("import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('left one')")
        assert r.status == "ok" and _zygotes(sb) == {}
        assert sb.run_sync("print('fresh')").stdout == "fresh\n"


def test_two_sandboxes_sharing_uids_do_not_deadlock(scratch: str) -> None:
    with _Open(_config(scratch, warm_imports=())) as a, _Open(_config(scratch, warm_imports=())) as b:
        start = time.monotonic()
        for i in range(3):
            assert a.run_sync(f"print('a{i}')").stdout == f"a{i}\n"
            assert b.run_sync(f"print('b{i}')").stdout == f"b{i}\n"
        assert time.monotonic() - start < 20


def test_close_leaves_no_process(scratch: str) -> None:
    _require_bwrap_and_root()
    sb = Sandbox(_config(scratch, num_slots=2, warm_imports=()))

    async def four() -> list:
        return await asyncio.gather(*(sb.run("print(1)") for _ in range(4)))

    try:
        assert [r.status for r in asyncio.run(four())] == ["ok"] * 4
        assert len(_zygotes(sb)) == 2
    finally:
        sb.close()
    assert {uid: processes_of_uid(uid, include_zombies=False) for uid in (OWN_UID, OWN_UID + 1)} == {
        OWN_UID: [],
        OWN_UID + 1: [],
    }


def test_interpreter_exit_kills_zygotes(scratch: str) -> None:
    _require_bwrap_and_root()
    work_root = os.path.join(scratch, f"root-{uuid.uuid4().hex[:8]}")
    prog = (
        "from verl_sod.sandbox import Sandbox, SandboxConfig\n"
        f"sb = Sandbox(SandboxConfig(num_slots=2, base_uid={OWN_UID}, work_root={work_root!r}, warm=True))\n"
        "print(sb.run_sync('print(5)').stdout, end='')\n"  # no close(): atexit must do it
    )
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "5\n"), proc.stderr
    assert processes_of_uid(OWN_UID, include_zombies=False) == []


def test_cli_run_warm_prints_one_json_line(scratch: str) -> None:
    _require_bwrap_and_root()
    path = os.path.join(scratch, f"prog-{uuid.uuid4().hex[:6]}.py")
    with open(path, "w") as fh:
        fh.write("import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nsys.exit(2)\n")
    cmd = [sys.executable, "-m", "verl_sod.sandbox", "run", path, "--warm", "--timeout", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["status"], result["stdout"], result["stderr"], result["exit_code"]) == (
        "error",
        "hi\n",
        "oops\n",
        2,
    )
