"""Loading and validating the per-step SOD records a training run writes.

Layout: ``RUN_DIR/sod_steps/step_000003.jsonl``, one JSON object per trajectory (see
``docs/report.md``). :func:`load_records` reads every file, turns each valid line into a
:class:`Trajectory` and keeps a ``file:line: reason`` note for every line it had to skip.
:func:`step_table` flattens trajectories into numpy arrays, one entry per assistant step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verl_sod.fields import FAILED_OUTCOMES, OUTCOMES, PATTERNS, STEP_TYPES
from verl_sod.fields import RECORDS_SUBDIR as STEPS_DIRNAME
from verl_sod.fields import TOOL_STATS_FIELDS as TOOL_FIELDS


class ReportError(Exception):
    """A problem with the input that stops the report (missing directory, no records)."""


@dataclass(frozen=True)
class Step:
    """One assistant step k of a trajectory and the outcome of the tool call it made."""

    k: int
    tokens: int
    d: float
    w: float
    w_applied: float
    outcome: str
    fault: str | None = None  # the tool's fault label for the step's call (None: not recorded)
    d_content: float | None = None  # d_k over content tokens (None: not recorded or no such token)
    content_tokens: int | None = None
    type: str | None = None  # step type as recorded (the report recomputes it from the outcomes)


@dataclass(frozen=True)
class Trajectory:
    """One trajectory record; ``tool`` is None when the run had no agent-loop stats."""

    step: int
    uid: str
    reward: float
    pattern: str
    weighting: str
    response_tokens: int
    tool: dict[str, int] | None
    steps: tuple[Step, ...]
    extra: dict[str, float] = field(default_factory=dict)  # reward extra info scalars ({}: none)


@dataclass
class LoadResult:
    """Everything read from a run directory."""

    run_dir: Path
    steps_dir: Path
    trajectories: list[Trajectory]
    files: int
    skipped: list[str] = field(default_factory=list)
    metrics: dict[int, dict[str, float]] | None = None


def resolve_dirs(path: str | Path) -> tuple[Path, Path]:
    """``(run_dir, steps_dir)`` for a path that is either the run dir or its ``sod_steps`` dir."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"run directory does not exist: {p}")
    if not p.is_dir():
        raise ReportError(f"not a directory: {p}")
    if (p / STEPS_DIRNAME).is_dir():
        return p, p / STEPS_DIRNAME
    if p.name == STEPS_DIRNAME or any(p.glob("step_*.jsonl")):
        return p.parent, p
    raise ReportError(f"no {STEPS_DIRNAME}/ directory (and no step_*.jsonl files) in {p}")


def _num(obj: dict[str, Any], key: str, kind: type = float) -> Any:
    if key not in obj:
        raise ValueError(f"missing key {key!r}")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key!r} must be a number, got {v!r}")
    if kind is int:
        if float(v) != int(v):
            raise ValueError(f"{key!r} must be an integer, got {v!r}")
        return int(v)
    if not math.isfinite(float(v)):
        raise ValueError(f"{key!r} must be finite, got {v!r}")
    return float(v)


def parse_step(obj: Any) -> Step:
    """One entry of ``steps``; raises ValueError when it is malformed."""
    if not isinstance(obj, dict):
        raise ValueError(f"step entry must be an object, got {type(obj).__name__}")
    outcome = obj.get("outcome", "none")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    w = _num(obj, "w")
    w_applied = _num(obj, "w_applied") if "w_applied" in obj else w
    kind = obj.get("type")
    if kind is not None and kind not in STEP_TYPES:
        raise ValueError(f"unknown step type {kind!r}")
    fault = obj.get("fault")
    return Step(
        _num(obj, "k", int), _num(obj, "tokens", int), _num(obj, "d"), w, w_applied, outcome,
        fault=None if fault is None else str(fault),
        d_content=_num(obj, "d_content") if obj.get("d_content") is not None else None,
        content_tokens=_num(obj, "content_tokens", int) if "content_tokens" in obj else None,
        type=kind,
    )  # fmt: skip


def parse_extra(obj: Any) -> dict[str, float]:
    """The ``extra`` scalars ({} when absent); raises ValueError when present but malformed."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ValueError("'extra' must be an object or null")
    return {str(k): _num(obj, k) for k in obj}


def parse_tool(obj: Any) -> dict[str, int] | None:
    """The ``tool`` counters, or None; raises ValueError when present but malformed."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError("'tool' must be an object or null")
    return {key: _num(obj, key, int) if key in obj else 0 for key in TOOL_FIELDS}


def parse_trajectory(obj: Any) -> Trajectory:
    """One record line (already JSON-decoded); raises ValueError when it is malformed."""
    if not isinstance(obj, dict):
        raise ValueError(f"record must be a JSON object, got {type(obj).__name__}")
    pattern = obj.get("pattern")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}")
    raw_steps = obj.get("steps")
    if not isinstance(raw_steps, list):
        raise ValueError("'steps' must be a list")
    steps = tuple(sorted((parse_step(s) for s in raw_steps), key=lambda s: s.k))
    return Trajectory(
        step=_num(obj, "step", int),
        uid=str(obj.get("uid", "")),
        reward=_num(obj, "reward"),
        pattern=pattern,
        weighting=str(obj.get("weighting", "divergence")),
        response_tokens=_num(obj, "response_tokens", int) if "response_tokens" in obj else 0,
        tool=parse_tool(obj.get("tool")),
        steps=steps,
        extra=parse_extra(obj.get("extra")),
    )


def _read_file(path: Path, out: list[Trajectory], skipped: list[str]) -> None:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(parse_trajectory(json.loads(line)))
            except (ValueError, TypeError) as exc:
                skipped.append(f"{path}:{lineno}: {exc}")


def load_metrics(run_dir: Path) -> dict[int, dict[str, float]] | None:
    """verl's ``metrics.jsonl`` (file logger) as ``{step: {metric: value}}``, or None if absent."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    out: dict[int, dict[str, float]] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
                step, data = int(obj["step"]), obj["data"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(data, dict):
                num = {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
                out.setdefault(step, {}).update(num)
    return out or None


def load_records(path: str | Path) -> LoadResult:
    """Read every ``step_*.jsonl`` under the run; raises ReportError if nothing usable is there."""
    run_dir, steps_dir = resolve_dirs(path)
    files = sorted(steps_dir.glob("step_*.jsonl"))
    if not files:
        raise ReportError(f"no step_*.jsonl record files in {steps_dir}")
    trajectories: list[Trajectory] = []
    skipped: list[str] = []
    for f in files:
        _read_file(f, trajectories, skipped)
    if not trajectories:
        raise ReportError(
            f"no valid records in {len(files)} file(s) under {steps_dir} ({len(skipped)} malformed line(s))"
        )
    trajectories.sort(key=lambda t: t.step)
    return LoadResult(run_dir, steps_dir, trajectories, len(files), skipped, load_metrics(run_dir))


@dataclass(frozen=True)
class StepTable:
    """Flat per-step arrays (index i = one assistant step) plus per-trajectory arrays."""

    traj: np.ndarray  # int, index into the trajectory arrays
    k: np.ndarray  # int, step index within its trajectory
    d: np.ndarray
    w: np.ndarray
    w_applied: np.ndarray
    prev_failed: np.ndarray  # bool: the previous step's tool call failed (False for k = 0)
    right: np.ndarray  # bool per trajectory: reward >= threshold
    train_step: np.ndarray  # int per trajectory
    prompt: np.ndarray  # int per trajectory: cluster id of (training step, prompt uid)


def prompt_uid(uid: str) -> str | None:
    """The prompt part of a trajectory key ``{prompt uid}_{sample}_{index}`` (verl's TransferQueue
    keys), or None when ``uid`` is not of that form."""
    parts = uid.rsplit("_", 2)
    if len(parts) == 3 and parts[0] and parts[1].isdigit() and parts[2].isdigit():
        return parts[0]
    return None


def prompt_clusters(trajectories: list[Trajectory]) -> np.ndarray:
    """Cluster id per trajectory: the samples of one prompt within one training step share one.

    A trajectory whose uid does not parse (:func:`prompt_uid`) is its own cluster.
    """
    ids: dict[tuple[int, str], int] = {}
    out = []
    for i, t in enumerate(trajectories):
        p = prompt_uid(t.uid)
        key = (t.step, p if p is not None else f"\0traj{i}")
        out.append(ids.setdefault(key, len(ids)))
    return np.asarray(out, dtype=np.int64)


def step_table(trajectories: list[Trajectory], right_threshold: float) -> StepTable:
    """Flatten trajectories; ``prev_failed``: step k-1 of the same trajectory had outcome error/timeout."""
    traj, ks, d, w, wa, prev = [], [], [], [], [], []
    for i, t in enumerate(trajectories):
        last_k, last_outcome = -1, "none"
        for s in t.steps:
            traj.append(i)
            ks.append(s.k)
            d.append(s.d)
            w.append(s.w)
            wa.append(s.w_applied)
            prev.append(s.k > 0 and last_k == s.k - 1 and last_outcome in FAILED_OUTCOMES)
            last_k, last_outcome = s.k, s.outcome
    return StepTable(
        traj=np.asarray(traj, dtype=np.int64),
        k=np.asarray(ks, dtype=np.int64),
        d=np.asarray(d, dtype=np.float64),
        w=np.asarray(w, dtype=np.float64),
        w_applied=np.asarray(wa, dtype=np.float64),
        prev_failed=np.asarray(prev, dtype=bool),
        right=np.asarray([t.reward >= right_threshold for t in trajectories], dtype=bool),
        train_step=np.asarray([t.step for t in trajectories], dtype=np.int64),
        prompt=prompt_clusters(trajectories),
    )


TOOL_PATTERNS = ("no_failure", "failed_recovered", "failed_not_recovered")


def tool_pattern(t: Trajectory) -> str:
    """The trajectory's pattern from its tool outcomes alone (not from the weights)."""
    _, failed, recovered, _ = tool_counts(t)
    if not failed:
        return "no_failure"
    return "failed_recovered" if recovered else "failed_not_recovered"


def tool_counts(t: Trajectory) -> tuple[int, int, int, bool]:
    """``(calls, failed calls, recovered, from_steps)``; derived from step outcomes if ``tool`` is None.

    The fallback counts at most one call per step (the step's most severe outcome), and calls a
    trajectory recovered when a failed step is followed later by an ``ok`` step.
    """
    if t.tool is not None:
        failed = t.tool["tool_errors"] + t.tool["tool_timeouts"]
        return t.tool["tool_calls"], failed, int(t.tool["recovered"] > 0), False
    outcomes = [s.outcome for s in t.steps]
    calls = sum(o != "none" for o in outcomes)
    failed_at = [i for i, o in enumerate(outcomes) if o in FAILED_OUTCOMES]
    recovered = bool(failed_at) and "ok" in outcomes[failed_at[0] + 1 :]
    return calls, len(failed_at), int(recovered), True
