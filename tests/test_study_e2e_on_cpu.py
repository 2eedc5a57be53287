"""The smoke study of ``make test``: 2 arms x 1 seed x 2 steps on chain_calc through verl's trainer.

It runs ``python -m verl_sod.study run tests/data/study_smoke.yaml`` for real, kills the study
(SIGTERM to its process group) while the second run is going, resumes it (the finished run is not
redone, the interrupted one is cleared and redone), checks that a third call does nothing, and
renders ``python -m verl_sod.study report``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).resolve().parent / "data" / "study_smoke.yaml"
STUDY = [sys.executable, "-m", "verl_sod.study"]


def _wait_for(path: Path, proc: subprocess.Popen, limit_s: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < limit_s:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(2)
    return False


def _no_leftovers(marker: str, limit_s: float = 60) -> list[str]:
    """Processes whose command line still names the killed run directory (empty when all exited)."""
    t0 = time.time()
    while True:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        left = [line for line in out if marker in line and "ps -eo" not in line]
        if not left or time.time() - t0 > limit_s:
            return left
        time.sleep(2)


def test_smoke_study_kill_resume_report(tmp_path):
    out = tmp_path / "smoke"
    with open(tmp_path / "first.log", "w") as log:
        cmd = [*STUDY, "run", str(SPEC), "--out", str(out)]
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            grpo_done = _wait_for(out / "summaries" / "grpo-seed3.json", first, 900)
            assert grpo_done, (tmp_path / "first.log").read_text()[-3000:]
            assert _wait_for(out / "runs" / "sod-seed3" / "train.log", first, 300)
            time.sleep(5)  # the second run is under way
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGTERM)
            first.wait(timeout=120)
    assert not (out / "summaries" / "sod-seed3.json").exists()
    assert not _no_leftovers(str(out / "runs" / "sod-seed3")), "the killed run left processes behind"
    grpo_mtime = (out / "summaries" / "grpo-seed3.json").stat().st_mtime

    t0 = time.time()
    resumed = subprocess.run([*STUDY, "run", str(SPEC), "--out", str(out)], capture_output=True, text=True,
                             timeout=1200)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "1 already done, 1 to run" in resumed.stdout
    assert "run 1/1 sod-seed3" in resumed.stdout and "ETA" in resumed.stdout
    print(f"resumed run of sod: {time.time() - t0:.0f} s")
    assert (out / "summaries" / "grpo-seed3.json").stat().st_mtime == grpo_mtime  # not redone

    again = subprocess.run(
        [*STUDY, "run", str(SPEC), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout

    for rid in ("grpo-seed3", "sod-seed3"):
        s = json.loads((out / "summaries" / f"{rid}.json").read_text())
        assert len(s["validation"]) == 16 * 2 and len({r["problem"] for r in s["validation"]}) >= 14
        assert {"acc", "score"} <= set(s["validation"][0]) and [m["step"] for m in s["metrics"]][-1] == 2
        assert "data.seed=3" in s["overrides"] and "actor_rollout_ref.rollout.seed=3" in s["overrides"]
    sod = json.loads((out / "summaries" / "sod-seed3.json").read_text())
    assert sod["events"] is not None and sod["events"]["trajectories"] > 0  # its per-step records were read

    rep = subprocess.run([*STUDY, "report", str(out)], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    md = (out / "report" / "report.md").read_text()
    assert "| sod − grpo | 1 x " in md and "With one seed, run-to-run variation is not estimated" in md
    assert (out / "report" / "success_by_arm.png").is_file() and (out / "report" / "contrasts.png").is_file()
