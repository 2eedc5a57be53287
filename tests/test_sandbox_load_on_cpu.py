"""The local sandbox under load: 50 concurrent API calls and 50 concurrent CLI runs all succeed.

Before the level was decided once and probes held a slot lock, 20 CLI runs started at once on a
2-core machine made 1-3 of them fail with "no usable sandbox isolation level" (their probes were
killed by other processes' sweeps of the shared slot uid). Each test starts with a work root of its
own, hence a cold isolation cache, so the probes themselves run under the load. No timing is
asserted. The CLI test starts 50 interpreters (each imports torch through ``verl_sod``): it is
``e2e``; run it by hand inside ``flock /tmp/verl_sod_heavy.lock``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sandbox_hostile as hostile

from verl_sod.sandbox import Sandbox, SandboxConfig, level_cache
from verl_sod.sandbox.procs import processes_of_uid

N = 50
BASE_UID = 62500
CLI_UID = 62600  # the CLI runs with one slot: every process competes for this one uid


@pytest.fixture
def scratch() -> Iterator[str]:
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        pytest.fail("needs root and bubblewrap: `apt-get install -y bubblewrap`", pytrace=False)
    yield from hostile.scratch_dir("verl_sod_load-")


def _no_leftovers(*uids: int) -> dict[int, list[int]]:
    def find() -> dict[int, list[int]]:
        found = {uid: processes_of_uid(uid, include_zombies=False) for uid in uids}
        return {uid: pids for uid, pids in found.items() if pids}

    return hostile.settled(find, 2.0)


def test_50_concurrent_api_calls_all_succeed(scratch: str) -> None:
    """50 threads each build a Sandbox (cold cache) and run; then 50 coroutines share one."""
    cfg = hostile.make_config(scratch, base_uid=BASE_UID, num_slots=4)

    def one(i: int) -> tuple[str, str, str]:
        with Sandbox(cfg) as sb:
            r = sb.run_sync(f"print({i} * 3)")
        return sb.isolation, r.status, r.stdout

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(one, range(N)))
    assert results == [("bwrap", "ok", f"{i * 3}\n") for i in range(N)]

    with Sandbox(cfg) as sb:

        async def many() -> list:
            return await asyncio.gather(*(sb.run(f"print({i} + 1)") for i in range(N)))

        gathered = asyncio.run(many())
    assert [(r.status, r.stdout) for r in gathered] == [("ok", f"{i + 1}\n") for i in range(N)]
    assert _no_leftovers(*range(BASE_UID, BASE_UID + 4)) == {}


@pytest.mark.e2e
def test_50_concurrent_cli_runs_all_succeed(scratch: str) -> None:
    work_root = os.path.join(scratch, "cli-root")
    cfg = SandboxConfig(base_uid=CLI_UID, work_root=work_root)
    cache_entry = level_cache.entry_path(level_cache.cache_key("bwrap", cfg), cfg)
    assert not os.path.exists(cache_entry)
    prog = os.path.join(scratch, "prog.py")
    with open(prog, "w") as fh:
        fh.write("print(6 * 7)\n")
    cmd = [sys.executable, "-m", "verl_sod.sandbox", "run", prog]
    cmd += ["--base-uid", str(CLI_UID), "--work-root", work_root, "--timeout", "30"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(N)
    ]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        lines = out.splitlines()
        result = json.loads(lines[0]) if proc.returncode == 0 and len(lines) == 1 else {}
        if (result.get("status"), result.get("stdout")) != ("ok", "42\n"):
            failures.append((proc.returncode, out[-300:], err[-600:]))
    assert failures == [], f"{len(failures)} of {N} CLI runs failed; first: {failures[:1]}"
    assert os.path.exists(cache_entry)  # decided once, for every later process on this host
    assert _no_leftovers(CLI_UID) == {}
