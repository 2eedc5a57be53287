"""The small per-run JSON summary a study report rests on, built from one run's raw outputs.

A run directory (``DIR/runs/ARM-seedS/``, out of git) holds verl's ``metrics.jsonl``, the
validation dump ``val/<step>.jsonl`` (``trainer.validation_data_dir``) and, for sod-preset arms,
the per-step records ``sod_steps/``. The summary keeps:

* ``validation``: one row per held-out sample of the final validation: ``problem`` (a hash of the
  prompt text, the same in every run, so arms and seeds pair by problem) and every scalar the
  task's reward dict returned (``score``, ``acc``, and e.g. ``horizon``, ``faults``, ``recovered``);
* ``metrics``: per training step, verl's metrics under :data:`METRIC_PREFIXES`;
* ``events``: sums for the event study of d_k / w_k at offsets -2..+4 around the first failed tool
  call of each recorded trajectory, split by whether the trajectory recovered (None without records).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from verl_sod.report.events import EVENT_VALUES, GROUPS, OFFSETS, event_rows
from verl_sod.report.records import ReportError, load_records

METRIC_PREFIXES = (
    "critic/score/",
    "actor/sod/",
    "actor/agent/",
    "actor/distillation/loss",
    "actor/grad_norm",
    "timing_s/step",
    "val-core/",
    "val-aux/",
)
#: validation-dump columns that are not reward-dict values
DUMP_COLUMNS = ("input", "output", "gts", "step", "uid", "reward")


def problem_key(prompt_text: str) -> str:
    """A stable id of a held-out problem: the hash of its prompt text."""
    return hashlib.sha1(prompt_text.encode("utf-8")).hexdigest()[:12]


def _scalar(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(float(v))
    return isinstance(v, str) and len(v) <= 64


def final_validation(val_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """``(step, rows)`` of the last validation dump under ``val_dir``; raises ReportError if none."""
    files = (
        [(int(p.stem), p) for p in val_dir.glob("*.jsonl") if p.stem.isdigit()] if val_dir.is_dir() else []
    )
    if not files:
        raise ReportError(f"no validation dump (<step>.jsonl) in {val_dir}")
    step, path = max(files)
    sessions: dict[str, tuple[int, dict[str, Any]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        raw = json.loads(line)
        row = {"problem": problem_key(str(raw.get("input", "")))}
        row.update({k: v for k, v in raw.items() if k not in DUMP_COLUMNS and _scalar(v)})
        if "score" in raw and _scalar(raw["score"]):
            row["score"] = raw["score"]
        session, index = _session(str(raw.get("uid", "")), n)
        if session not in sessions or index > sessions[session][0]:
            sessions[session] = (index, row)
    return step, [row for _, row in sessions.values()]


def _session(uid: str, line: int) -> tuple[str, int]:
    """``(session, index)`` of a dump key ``{prompt uid}_{sample}_{index}``: verl dumps every output
    of a session; one sample is its last output. A key of another form is its own session."""
    head, _, index = uid.rpartition("_")
    if head and index.isdigit() and "_" in head:
        return head, int(index)
    return f"\0line{line}", 0


def step_metrics(metrics_path: Path) -> list[dict[str, Any]]:
    """``[{"step": s, key: value, ...}]`` for the keys under :data:`METRIC_PREFIXES`."""
    out: list[dict[str, Any]] = []
    if not metrics_path.is_file():
        return out
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        data = obj.get("data", {})
        kept = {
            k: float(v)
            for k, v in data.items()
            if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        if kept:
            out.append({"step": int(obj["step"]), **kept})
    return out


def event_sums(run_dir: Path) -> dict[str, Any] | None:
    """Sums and counts of d, w, w_applied at each offset from the first failed call (None: no records).

    The steps come from :func:`verl_sod.report.events.event_rows` (the report's own event study).
    """
    try:
        loaded = load_records(run_dir)
    except ReportError:
        return None
    rows = event_rows(loaded.trajectories)
    out: dict[str, Any] = {"offsets": list(OFFSETS), "trajectories": len(loaded.trajectories)}
    for group in GROUPS:
        sel_g = rows.recovered == (group == GROUPS[0])
        g: dict[str, Any] = {"events": rows.events[group], "n": []}
        g.update({v: [] for v in EVENT_VALUES})
        for off in OFFSETS:
            sel = sel_g & (rows.offset == off)
            g["n"].append(int(sel.sum()))
            for v in EVENT_VALUES:
                g[v].append(float(rows.values[v][sel].sum()))
        out[group] = g
    return out


def build_summary(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The per-run summary of a finished run (raises ReportError when the validation dump is missing)."""
    val_step, rows = final_validation(run_dir / "val")
    return {
        **identity,
        "validation_step": val_step,
        "validation": rows,
        "metrics": step_metrics(run_dir / "metrics.jsonl"),
        "events": event_sums(run_dir),
    }
