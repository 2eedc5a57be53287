"""Plain subprocess vs the local sandbox, cold and warm, measured side by side.

Run as root with bubblewrap installed: ``.venv/bin/python benchmarks/bench_sandbox.py``. For each
program the runners alternate (order rotated each round), so load from other jobs hits all alike:
``plain`` is ``subprocess.run([python, '-c', code])``; ``bwrap argv`` the sandbox's own
prlimit/setpriv/bwrap argv started with ``subprocess.run`` (the price of the isolation alone);
``cold`` the full ``await Sandbox.run`` with a fresh interpreter per run (slot, work dir, output
caps; the background removal of the work directory is waited for between samples, outside the
timing); ``warm`` the same through the warm pool (``warm=True``, numpy pre-imported, own uids).
Then throughput of ``print(1)`` with concurrent callers, and the verdict per sandbox mode.
Target: sandbox p50 within 1.5x of the plain subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from verl_sod.sandbox import Sandbox, SandboxConfig, isolation
from verl_sod.sandbox.cleanup import wait_for_cleanup

PROGRAMS = {
    "hello": "print(1)",
    "compute": "print(sum(i * i for i in range(200_000)))",
    "numpy": "import numpy as np\nprint(int(np.arange(1000).sum()))",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plain(python: str, code: str) -> None:
    subprocess.run([python, "-c", code], capture_output=True, check=True)


def raw_bwrap(cfg: SandboxConfig, code: str) -> float:
    """Only the isolation: the sandbox's prlimit/setpriv/bwrap argv and env, timed around the run."""
    run_dir = isolation.prepare_run_dir(cfg.work_root, 0, cfg.base_uid)
    try:
        with open(os.path.join(run_dir, "work", "main.py"), "w") as fh:
            fh.write(code)
        launch = isolation.build_launch("bwrap", cfg, 0, run_dir, cfg.timeout_s)
        env = isolation.sandbox_env(launch)
        start = time.perf_counter()
        subprocess.run(launch.argv, cwd=launch.cwd, env=env, capture_output=True, check=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency_rows(sbs: dict[str, Sandbox], loop: asyncio.AbstractEventLoop, repeats: int) -> list[tuple]:
    cfg = sbs["cold"].config
    rows = []
    for name, code in PROGRAMS.items():
        n = max(5, repeats // 2) if name == "numpy" else repeats
        runners: dict[str, Callable[[], float]] = {
            "plain": lambda code=code: timed(lambda: plain(cfg.python, code)),
            "bwrap argv": lambda code=code: raw_bwrap(cfg, code),
        }
        for kind, sb in sbs.items():
            runners[kind] = lambda code=code, sb=sb: loop.run_until_complete(_timed_run(sb, code))
        samples: dict[str, list[float]] = {kind: [] for kind in runners}
        order = list(runners)
        for i in range(n):  # interleaved, order rotated: all runners see the same load and neighbours
            shift = i % len(order)
            for kind in order[shift:] + order[:shift]:
                samples[kind].append(runners[kind]())
                wait_for_cleanup()  # directory removal runs after the result: keep it out of samples
        base = statistics.median(samples["plain"])
        for kind, values in samples.items():
            p50 = statistics.median(values)
            rows.append((name, kind, n, p50 * 1e3, pct(values, 0.95) * 1e3, p50 / base))
    return rows


async def _timed_run(sb: Sandbox, code: str) -> float:
    start = time.perf_counter()
    r = await sb.run(code)
    if r.status != "ok":
        raise RuntimeError(f"sandbox run failed: {r}")
    return time.perf_counter() - start


async def _warm_up(sb: Sandbox, n: int) -> None:
    await asyncio.gather(*(sb.run("pass") for _ in range(n)))


def throughput(
    sbs: dict[str, Sandbox], loop: asyncio.AbstractEventLoop, calls: int, workers: int, rounds: int = 6
) -> dict[str, float]:
    """Calls per second of print(1) with ``workers`` concurrent callers; runners alternate per batch."""
    code = PROGRAMS["hello"]
    python = sbs["cold"].config.python
    per_round = max(workers, calls // rounds)
    spent = {"plain": 0.0, **{kind: 0.0 for kind in sbs}}

    async def many(sb: Sandbox) -> None:
        results = await asyncio.gather(*(sb.run(code) for _ in range(per_round)))
        assert all(r.status == "ok" for r in results)

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(lambda _: plain(python, code), range(per_round)))
            spent["plain"] += time.perf_counter() - start
            for kind, sb in sbs.items():
                start = time.perf_counter()
                loop.run_until_complete(many(sb))
                spent[kind] += time.perf_counter() - start
    total = per_round * rounds
    return {kind: total / seconds for kind, seconds in spent.items()}


def has_numpy(python: str) -> bool:
    return subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calls", type=int, default=60, help="calls in the throughput test")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work_root = tempfile.mkdtemp(prefix="verl_sod_bench-", dir="/tmp")
    os.chmod(work_root, 0o755)
    cfg = SandboxConfig(num_slots=args.workers, work_root=os.path.join(work_root, "root"), timeout_s=30)
    numpy = has_numpy(cfg.python)
    if not numpy:
        print(f"no numpy for {cfg.python}: skipping the numpy row (apt-get install -y python3-numpy)")
        del PROGRAMS["numpy"]
    # the warm pool gets uids of its own: a cold run's first-use sweep would kill its idle zygotes
    warm_cfg = cfg.replace(warm=True, warm_imports=("numpy",) if numpy else (), base_uid=cfg.base_uid + 64)
    sbs = {"cold": Sandbox(cfg), "warm": Sandbox(warm_cfg)}
    loop = asyncio.new_event_loop()
    try:
        print(f"isolation: {sbs['cold'].isolation}; python {cfg.python}; cpus {os.cpu_count()}")
        print(f"load average at the start: {os.getloadavg()}")
        for sb in sbs.values():  # warm up: caches, and one zygote per slot
            loop.run_until_complete(_warm_up(sb, args.workers))
        print(f"\n{'program':9s} {'runner':12s} {'n':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'p50/plain':>10s}")
        rows = latency_rows(sbs, loop, args.repeats)
        for name, kind, n, p50, p95, ratio in rows:
            print(f"{name:9s} {kind:12s} {n:4d} {p50:8.1f} {p95:8.1f} {ratio:9.2f}x")
        rates = throughput(sbs, loop, args.calls, args.workers)
        print(f"\nthroughput, print(1), {args.workers} concurrent callers, {args.calls} calls per runner:")
        print("  " + "   ".join(f"{kind} {rate:6.1f}/s" for kind, rate in rates.items()))
        print(f"load average at the end: {os.getloadavg()}")
        for kind in sbs:
            worst = max(ratio for _, runner, *_, ratio in rows if runner == kind)
            verdict = "MET" if worst <= 1.5 else "NOT MET"
            print(f"target p50 <= 1.5x plain, {kind} sandbox: {verdict} (worst {worst:.2f}x)")
    finally:
        for sb in sbs.values():
            sb.close()
        loop.close()
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
