"""End to end: ``python -m verl_sod.eval run --cpu`` through verl's real trainer in val-only mode.

Tiny SFT'd student, 4 chained-calculator problems, k=2 samples each; then the report is checked
against the dump, and offline re-scoring must reproduce every online score.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_sod.eval.dump import dump_files, load_generations, read_records, rescore

PROBLEMS, K = 4, 2
SOURCE = "verl_sod/chain_calc"


@pytest.mark.e2e
def test_cpu_eval_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "verl_sod.eval", "run", "--cpu", "--out", str(out)]
    cmd += ["--k", str(K), "--problems", str(PROBLEMS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = (out / "eval.log").read_text() if (out / "eval.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-5000:]

    records = read_records(dump_files(out / "generations"))
    assert len(records) == PROBLEMS * K
    assert {r["data_source"] for r in records} == {SOURCE}
    assert all(r["tool_calls"] >= 0 and r["num_turns"] >= 2 for r in records)

    report = json.loads((out / "report.json").read_text())
    summary = report["benchmarks"][SOURCE]
    assert summary["problems"] == PROBLEMS and summary["k"] == K and report["samples"] == PROBLEMS * K
    mean_score = sum(r["score"] for r in records) / len(records)
    assert summary["avg_at_k"] == pytest.approx(mean_score)
    assert set(summary["pass_at_k"]) == {"1", "2"}
    assert summary["tool_calls_per_traj"] is not None and summary["mean_response_length"] > 0
    md = (out / "report.md").read_text()
    assert "| benchmark | problems | k | avg@k ± CI |" in md and f"| {SOURCE} | {PROBLEMS} | {K} |" in md

    gens = load_generations(records)
    assert rescore(gens) == 0, [(g.online_score, g.sample.score, g.record["output"][-80:]) for g in gens]
