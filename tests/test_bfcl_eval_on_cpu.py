"""End to end: ``python -m verl_sod.eval run --cpu --task bfcl`` through verl's real trainer (val-only).

Tiny random-init student, the shortest held-out BFCL tasks, k=2 samples each. The model scores ~0;
the test checks the wiring: the dump carries the BFCL data sources, the loop's tool counts and the
reward's task fields, and the report has a row per category with the BFCL fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_sod.eval.dump import dump_files, read_records

PROBLEMS, K = 2, 2
FIELDS = ("turns_completed", "turns_passed", "num_user_turns", "force_quit")


@pytest.mark.e2e
def test_cpu_bfcl_eval_run_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("bfcl_eval")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "verl_sod.eval", "run", "--cpu", "--task", "bfcl", "--out", str(out)]
    cmd += ["--k", str(K), "--problems", str(PROBLEMS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    log = (out / "eval.log").read_text() if (out / "eval.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-5000:]

    records = read_records(dump_files(out / "generations"))
    assert len(records) == PROBLEMS * K
    sources = {r["data_source"] for r in records}
    assert sources and all(s.startswith("bfcl/multi_turn/") for s in sources)
    for r in records:
        assert r["tool_calls"] >= 0 and r["num_turns"] >= 2, r
        assert 1 <= r["turns_completed"] <= r["num_user_turns"] and r["turns_passed"] <= r["num_user_turns"]
        assert r["score"] == r["acc"] in (0.0, 1.0) and isinstance(r["bfcl_error"], str)

    report = json.loads((out / "report.json").read_text())
    assert report["samples"] == PROBLEMS * K
    for source in sources:
        summary = report["benchmarks"][source]
        assert summary["avg_at_k_ci95"] is None or summary["avg_at_k_ci95"] >= 0
        assert set(FIELDS) <= set(summary["task_fields"]), summary["task_fields"]
        assert summary["tool_calls_per_traj"] is not None
    md = (out / "report.md").read_text()
    assert "## Task fields" in md and "turns_completed" in md
