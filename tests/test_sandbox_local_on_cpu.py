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
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest
import sandbox_hostile as hostile

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
    yield from hostile.scratch_dir("verl_sod_sbtest-")


def _config(scratch: str, **changes: object) -> SandboxConfig:
    return hostile.make_config(scratch, **{"num_slots": SLOTS, "base_uid": BASE_UID, **changes})


@pytest.fixture(scope="module")
def sandbox(scratch: str) -> Iterator[Sandbox]:
    _require_bwrap_and_root()
    with Sandbox(_config(scratch, timeout_s=10.0, max_processes=16)) as sb:
        yield sb


def _live_slot_processes(settle_s: float = 1.0) -> dict[int, list[int]]:
    """Live processes of the slot uids, after up to ``settle_s`` for ones the kernel is tearing down."""

    def find() -> dict[int, list[int]]:
        found = {uid: processes_of_uid(uid, include_zombies=False) for uid in SLOT_UIDS}
        return {uid: pids for uid, pids in found.items() if pids}

    return hostile.settled(find, settle_s)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    assert _live_slot_processes() == {}, "a sandboxed process outlived its run"


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


# ---------------------------------------------------------------- hostile programs (tests/sandbox_hostile.py)


@pytest.fixture
def open_sandbox(scratch: str) -> hostile.OpenSandbox:
    _require_bwrap_and_root()
    return lambda **changes: Sandbox(_config(scratch, **changes))


class TestHostile(hostile.HostileSuite):
    leftovers = staticmethod(_live_slot_processes)

    def test_setsid_double_fork_child_is_swept(self, scratch: str, host_dir: str) -> None:
        _require_bwrap_and_root()
        cfg = _config(scratch, keep_workdirs=True)
        with Sandbox(cfg) as sb:
            hostile.check_setsid_double_fork_child_swept(sb, host_dir, self.leftovers)
        assert glob.glob(os.path.join(cfg.work_root, "*", "work", "main.py")), "kept work dir not found"
        assert glob.glob(os.path.join(cfg.work_root, "*", "work", "marker")) == []


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
def test_fallback_levels_warn_and_contain_processes(scratch: str, level: str) -> None:
    _require_bwrap_and_root()
    host_dir = hostile.make_host_dir(scratch)
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
