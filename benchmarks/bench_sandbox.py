"""Local sandbox vs a plain ``subprocess.run([python, '-c', code])``, measured side by side.

Run as root with bubblewrap installed: ``.venv/bin/python benchmarks/bench_sandbox.py``. For each
program the plain call and the sandboxed call alternate, so load from other jobs hits both alike.
Rows: plain subprocess; the same bubblewrap argv the sandbox uses, started with ``subprocess.run``
(the price of the isolation alone, work directory set-up excluded); the full ``await Sandbox.run``
(slot, work dir, sweep, output caps; the background removal of the work directory is waited for
between samples, outside the timing, and is included in the throughput test). Then throughput
with 2 concurrent callers, and what a warm interpreter could save.
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
from verl_sod.sandbox.local import wait_for_cleanup

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


def latency_rows(sb: Sandbox, loop: asyncio.AbstractEventLoop, repeats: int) -> list[tuple]:
    cfg = sb.config
    rows = []
    for name, code in PROGRAMS.items():
        n = max(5, repeats // 2) if name == "numpy" else repeats
        samples: dict[str, list[float]] = {"plain": [], "bwrap argv": [], "Sandbox.run": []}
        runners: dict[str, Callable[[], float]] = {
            "plain": lambda code=code: timed(lambda: plain(cfg.python, code)),
            "bwrap argv": lambda code=code: raw_bwrap(cfg, code),
            "Sandbox.run": lambda code=code: loop.run_until_complete(_timed_run(sb, code)),
        }
        order = list(runners)
        for i in range(n):  # interleaved, order rotated: all three see the same load and neighbours
            for kind in order[i % 3 :] + order[: i % 3]:
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


def throughput(
    sb: Sandbox, loop: asyncio.AbstractEventLoop, calls: int, workers: int, rounds: int = 6
) -> tuple[float, float]:
    """Calls per second with ``workers`` concurrent callers; batches alternate between the two."""
    code = PROGRAMS["hello"]
    per_round = max(workers, calls // rounds)
    spent = {"plain": 0.0, "sandbox": 0.0}

    async def many() -> None:
        results = await asyncio.gather(*(sb.run(code) for _ in range(per_round)))
        assert all(r.status == "ok" for r in results)

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(lambda _: plain(sb.config.python, code), range(per_round)))
            spent["plain"] += time.perf_counter() - start
            start = time.perf_counter()
            loop.run_until_complete(many())
            spent["sandbox"] += time.perf_counter() - start
    total = per_round * rounds
    return total / spent["plain"], total / spent["sandbox"]


def import_cost(python: str, repeats: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import numpy; print(time.perf_counter() - t)"
    outs = [
        float(subprocess.run([python, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(outs)


ZYGOTE = """
import io, os, statistics, sys, time
import numpy
code = compile("import numpy as np\\nprint(int(np.arange(1000).sum()))", "main.py", "exec")
took = []
for _ in range(30):
    start = time.perf_counter()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sys.stdout = io.TextIOWrapper(os.fdopen(w, "wb"))
        exec(code, {"__name__": "__main__"})
        sys.stdout.flush()
        os._exit(0)
    os.close(w)
    while os.read(r, 4096):
        pass
    os.close(r)
    os.waitpid(pid, 0)
    took.append(time.perf_counter() - start)
print(statistics.median(took))
"""


def report_warm_pool(rows: list[tuple], python: str) -> None:
    """What a warm interpreter (numpy already imported, one fork per call) would cost instead."""
    hello = {kind: p50 for name, kind, _, p50, _, _ in rows if name == "hello"}
    numpy_ms = {kind: p50 for name, kind, _, p50, _, _ in rows if name == "numpy"}
    imp = import_cost(python) * 1e3
    fork_ms = float(subprocess.run([python, "-c", ZYGOTE], capture_output=True, text=True).stdout) * 1e3
    full, start_up = numpy_ms["Sandbox.run"], hello["Sandbox.run"]
    print(f"\nnumpy import inside the interpreter: {imp:.0f} ms (median of 5)")
    print(
        f"sandboxed numpy call p50 {full:.0f} ms = start-up (hello) {start_up:.0f} ms + numpy import "
        f"~{imp:.0f} ms + rest"
    )
    print(
        f"warm interpreter (numpy imported, fork per call, no sandbox around it): {fork_ms:.1f} ms p50 "
        f"per call -> ~{full / fork_ms:.0f}x less latency for numpy calls"
    )


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
    sb = Sandbox(cfg)
    loop = asyncio.new_event_loop()
    if not has_numpy(cfg.python):
        print(f"no numpy for {cfg.python}: skipping the numpy row (apt-get install -y python3-numpy)")
        del PROGRAMS["numpy"]
    try:
        print(
            f"isolation: {sb.isolation}; python {cfg.python}; cpus {os.cpu_count()}; load {os.getloadavg()}"
        )
        loop.run_until_complete(sb.run("pass"))  # warm caches
        print(f"\n{'program':9s} {'runner':12s} {'n':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'p50/plain':>10s}")
        rows = latency_rows(sb, loop, args.repeats)
        for name, kind, n, p50, p95, ratio in rows:
            print(f"{name:9s} {kind:12s} {n:4d} {p50:8.1f} {p95:8.1f} {ratio:9.2f}x")
        plain_rate, sb_rate = throughput(sb, loop, args.calls, args.workers)
        print(f"\nthroughput, hello, {args.workers} concurrent, {args.calls} calls:")
        print(
            f"  plain {plain_rate:6.1f}/s   Sandbox.run {sb_rate:6.1f}/s   ratio {plain_rate / sb_rate:.2f}x"
        )
        if "numpy" in {row[0] for row in rows}:
            report_warm_pool(rows, cfg.python)
        worst = max(ratio for name, kind, *_, ratio in rows if kind == "Sandbox.run")
        print(f"load average at the end: {os.getloadavg()}")
        print(f"\ntarget p50 <= 1.5x plain: {'MET' if worst <= 1.5 else 'NOT MET'} (worst {worst:.2f}x)")
    finally:
        sb.close()
        loop.close()
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
