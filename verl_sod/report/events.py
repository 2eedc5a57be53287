"""Event study of d_k and w_k around the first failed tool call of each trajectory.

The event of a trajectory is its first step whose call failed (outcome ``error`` / ``timeout``):
a visible fault, the one the agent can react to (a silent corruption is no event: nothing in the
trajectory marks it). Offsets run -2..+4 around it; a trajectory contributes at each offset where
it has a step. Trajectories are split by whether they recovered (a failed call later followed by
a good one: the ``recovered`` tool counter, else the step outcomes).

:func:`event_rows` is the one extraction: the study's per-run sums (``verl_sod.study.summary``)
and this report's bootstrap table (:func:`event_study`) both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from verl_sod.report.records import FAILED_OUTCOMES, Trajectory, prompt_clusters, tool_counts
from verl_sod.report.stats import Estimate, bootstrap_estimate

OFFSETS = tuple(range(-2, 5))
EVENT_VALUES = ("d", "w", "w_applied")
GROUPS = ("recovered", "not_recovered")


@dataclass(frozen=True)
class EventRows:
    """One row per (event trajectory, offset with a step)."""

    traj: np.ndarray  # int: index into the trajectory list
    recovered: np.ndarray  # bool
    offset: np.ndarray  # int
    values: dict[str, np.ndarray]  # EVENT_VALUES -> float
    events: dict[str, int]  # group -> number of event trajectories


def first_failure(t: Trajectory) -> int | None:
    """k of the trajectory's first failed call, None without one."""
    return next((s.k for s in t.steps if s.outcome in FAILED_OUTCOMES), None)


def event_rows(trajectories: list[Trajectory]) -> EventRows:
    """The steps at offsets :data:`OFFSETS` from each trajectory's first failed call."""
    traj, rec, off = [], [], []
    vals: dict[str, list[float]] = {v: [] for v in EVENT_VALUES}
    events = dict.fromkeys(GROUPS, 0)
    for i, t in enumerate(trajectories):
        first = first_failure(t)
        if first is None:
            continue
        recovered = bool(tool_counts(t)[2])
        events[GROUPS[0] if recovered else GROUPS[1]] += 1
        by_k = {s.k: s for s in t.steps}
        for o in OFFSETS:
            s = by_k.get(first + o)
            if s is None:
                continue
            traj.append(i)
            rec.append(recovered)
            off.append(o)
            for v in EVENT_VALUES:
                vals[v].append(float(getattr(s, v)))
    return EventRows(
        traj=np.asarray(traj, dtype=np.int64),
        recovered=np.asarray(rec, dtype=bool),
        offset=np.asarray(off, dtype=np.int64),
        values={v: np.asarray(x, dtype=np.float64) for v, x in vals.items()},
        events=events,
    )


def event_study(
    trajectories: list[Trajectory], reps: int, seed: int, cluster: str = "prompt"
) -> dict[str, Any]:
    """Mean d, w, w_applied per group and offset, 95% CIs from the cluster bootstrap.

    Clusters: a prompt within a training step (``cluster="prompt"``) or a trajectory. Each cell is
    ``{"value", "lo", "hi", "n"}`` (n = steps); a cell without steps has n = 0 and nan values, a cell
    whose steps all come from one cluster has no CI (nan bounds).
    """
    rows = event_rows(trajectories)
    ids = prompt_clusters(trajectories) if cluster == "prompt" else np.arange(len(trajectories))
    out: dict[str, Any] = {"offsets": list(OFFSETS), "events": rows.events, "cluster": cluster}
    for g, group in enumerate(GROUPS):
        out[group] = {}
        for v in EVENT_VALUES:
            cells = []
            for o in OFFSETS:
                sel = (rows.recovered == (g == 0)) & (rows.offset == o)
                x, cl = rows.values[v][sel], ids[rows.traj[sel]]
                est = bootstrap_estimate(_mean_of(x), x.size, cl, reps, seed)
                if np.unique(cl).size < 2:  # one cluster: resampling it says nothing about spread
                    est = Estimate(est.value, float("nan"), float("nan"), est.n)
                cells.append(est.to_dict())
            out[group][v] = cells
    return out


def _mean_of(x: np.ndarray) -> Callable[[np.ndarray], float]:
    """The statistic ``mean of x over the resampled indices``."""

    def stat(i: np.ndarray) -> float:
        return float(x[i].mean())

    return stat
