"""The numbers of a study report, from ``DIR/spec.yaml`` and the per-run summaries alone.

Success is the spec's ``evaluation.metric`` of each held-out sample, averaged over the samples of
a problem first (the samples of one problem are not independent), so the unit is a (seed, problem)
cell. Every arm starts from the same checkpoint and sees the same problems, so arms are compared by
their *final* success, paired by seed and problem (:func:`verl_sod.study.stats.paired_two_way`).
Pre-declared contrasts on the primary endpoint are Holm-corrected together; everything else
(other arm pairs, strata, outcomes) is labelled exploratory.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np

from verl_sod.study.spec import StudySpec
from verl_sod.study.stats import holm, paired_two_way, seed_mean_ci, seeds_needed

Rows = list[dict[str, Any]]
#: fault-type values that mean "no fault" (left out of recovery per fault type)
NO_FAULT = ("none", "", "None", "null")


def metric_key(spec: StudySpec, summaries: dict[str, dict[str, Any]]) -> str:
    """The success key: the spec's metric, or ``score`` when no validation row carries it."""
    key = spec.evaluation.metric
    if any(key in r for s in summaries.values() for r in s["validation"]):
        return key
    return "score"


def _select(rows: Rows, where: dict[str, Any]) -> Rows:
    return [r for r in rows if all(k in r and _same(r[k], v) for k, v in where.items())]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (bool, int, float)) and isinstance(b, (bool, int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def per_problem(rows: Rows, key: str) -> dict[str, float]:
    """Mean of ``key`` over the samples of each problem."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if key in r:
            acc[r["problem"]].append(float(r[key]))
    return {p: float(np.mean(v)) for p, v in acc.items()}


def arm_matrix(
    spec: StudySpec, summaries: dict, arm: str, key: str, where: dict
) -> dict[int, dict[str, float]]:
    """``{seed: {problem: success}}`` of an arm's finished runs on the selected rows."""
    out = {}
    for s in summaries.values():
        if s["arm"] == arm:
            cells = per_problem(_select(s["validation"], where), key)
            if cells:
                out[int(s["seed"])] = cells
    return out


def paired_matrix(
    a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]
) -> tuple[np.ndarray, list[int], int]:
    """``(diff[S, P], seeds, problems dropped)``: seeds both arms finished, problems every such run has."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return np.zeros((0, 0)), [], 0
    every = set.union(*(set(a[s]) | set(b[s]) for s in seeds))
    common = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    D = np.array([[a[s][p] - b[s][p] for p in common] for s in seeds], dtype=np.float64)
    return D.reshape(len(seeds), len(common)), seeds, len(every) - len(common)


def contrast(
    spec: StudySpec, summaries: dict, pair: tuple[str, str], key: str, where: dict
) -> dict[str, Any]:
    """One paired contrast ``pair[0] - pair[1]`` with its CI, p, per-seed SD and seeds needed."""
    D, seeds, dropped = paired_matrix(
        arm_matrix(spec, summaries, pair[0], key, where), arm_matrix(spec, summaries, pair[1], key, where)
    )
    est = paired_two_way(D)
    sd = float(np.std(est["per_seed"], ddof=1)) if len(est["per_seed"]) > 1 else float("nan")
    pw = spec.power
    return {
        "a": pair[0],
        "b": pair[1],
        "seeds": seeds,
        "problems_dropped": dropped,
        **est,
        "sd_per_seed": sd,
        "seeds_needed": seeds_needed(sd, pw.effect, pw.power, pw.alpha),
    }


def arm_table(spec: StudySpec, summaries: dict, key: str, where: dict) -> dict[str, Any]:
    """Per arm: final success over seeds (mean, t-CI over seeds, run-to-run SD, unpaired seeds needed)."""
    out = {}
    pw = spec.power
    for arm in spec.arms:
        m = arm_matrix(spec, summaries, arm.name, key, where)
        est = seed_mean_ci([float(np.mean(list(v.values()))) for _, v in sorted(m.items())])
        # two independent arms of n seeds each: the per-seed difference has SD sqrt(2) sigma_run
        n = seeds_needed(math.sqrt(2) * est["sd"], pw.effect, pw.power, pw.alpha) if est["n"] > 1 else None
        out[arm.name] = {**est, "seeds": sorted(m), "seeds_needed_unpaired": n}
    return out


def strata(spec: StudySpec, summaries: dict, key: str) -> dict[str, Any]:
    """Success by each stratum key the validation rows carry, per arm (exploratory)."""
    out: dict[str, Any] = {"present": [], "absent": [], "grid": None}
    rows = [r for s in summaries.values() for r in s["validation"]]
    values = {}
    for sk in spec.evaluation.strata:
        values[sk] = sorted({r[sk] for r in rows if sk in r}, key=lambda v: (str(type(v)), v))
        (out["present"] if values[sk] else out["absent"]).append(sk)
        if values[sk]:
            out[sk] = {str(v): arm_table(spec, summaries, key, {sk: v}) for v in values[sk]}
    if len(out["present"]) >= 2:  # the first two present keys crossed: x axis and line style of the plot
        x, line = out["present"][:2]
        out["grid"] = {
            "x": x,
            "line": line,
            "cells": [
                {"x": vx, "line": vl, "arms": arm_table(spec, summaries, key, {x: vx, line: vl})}
                for vx in values[x]
                for vl in values[line]
            ],
        }
    return out


def outcomes(spec: StudySpec, summaries: dict) -> dict[str, Any]:
    """Per arm means of outcome keys (e.g. recovered, cascade_length) and recovery per fault type."""
    ev = spec.evaluation
    out: dict[str, Any] = {"present": [], "absent": [], "by_fault_type": None}
    rows_of = {
        a.name: [r for s in summaries.values() if s["arm"] == a.name for r in s["validation"]]
        for a in spec.arms
    }
    for ok in ev.outcomes:
        if not any(ok in r for rows in rows_of.values() for r in rows):
            out["absent"].append(ok)
            continue
        out["present"].append(ok)
        out[ok] = {arm: arm_table(spec, summaries, ok, {})[arm] for arm in rows_of}
    if any(ev.fault_type in r and ev.recovered in r for rows in rows_of.values() for r in rows):
        types = sorted(
            {str(r[ev.fault_type]) for rows in rows_of.values() for r in rows if ev.fault_type in r}
            - set(NO_FAULT)
        )
        out["by_fault_type"] = {
            t: arm_table(spec, summaries, ev.recovered, {ev.fault_type: t}) for t in types
        }
    return out


def events(spec: StudySpec, summaries: dict) -> dict[str, Any]:
    """Pooled event study per arm: mean d, w, w_applied at each offset from the first failed call."""
    out: dict[str, Any] = {}
    for arm in spec.arms:
        ev = [s["events"] for s in summaries.values() if s["arm"] == arm.name and s.get("events")]
        if not ev:
            continue
        arm_out: dict[str, Any] = {"offsets": ev[0]["offsets"]}
        for group in ("recovered", "not_recovered"):
            n = np.sum([e[group]["n"] for e in ev], axis=0)
            g = {"events": int(sum(e[group]["events"] for e in ev)), "n": n.astype(int).tolist()}
            for v in ("d", "w", "w_applied"):
                total = np.sum([e[group][v] for e in ev], axis=0)
                g[v] = np.where(n > 0, total / np.maximum(n, 1), np.nan).tolist()
            arm_out[group] = g
        if arm_out["recovered"]["events"] + arm_out["not_recovered"]["events"]:
            out[arm.name] = arm_out
    return out


def analyse(spec: StudySpec, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything the report shows (``report.json``)."""
    key = metric_key(spec, summaries)
    where = spec.primary.where
    rows = [r for s in summaries.values() for r in s["validation"]]
    missing = sorted(k for k in where if not any(k in r for r in rows))
    primary: dict[str, Any] = {"where": where, "metric": key, "description": spec.primary.description}
    if missing:
        primary.update(available=False, reason=f"no validation row carries the key(s) {missing}")
        declared: list[dict[str, Any]] = []
    else:
        primary["available"] = True
        primary["arms"] = arm_table(spec, summaries, key, where)
        declared = [contrast(spec, summaries, pair, key, where) for pair in spec.contrasts]
        for c, p in zip(declared, holm([c["p"] for c in declared]), strict=True):
            c["p_holm"] = p
    declared_set = {frozenset(p) for p in spec.contrasts}
    exploratory = [
        contrast(spec, summaries, (a.name, b.name), key, where if not missing else {})
        for a, b in itertools.combinations(spec.arms, 2)
        if frozenset((a.name, b.name)) not in declared_set
    ]
    runs = sorted(summaries)
    expected = len(spec.arms) * len(spec.seeds)
    return {
        "study": spec.name,
        "task": spec.task.name,
        "metric": key,
        "runs_done": runs,
        "runs_expected": expected,
        "complete": len(runs) == expected,
        "overall": arm_table(spec, summaries, key, {}),
        "primary": primary,
        "contrasts": declared,
        "exploratory_contrasts": exploratory,
        "strata": strata(spec, summaries, key),
        "outcomes": outcomes(spec, summaries),
        "events": events(spec, summaries),
        "seconds": {s["run"]: s.get("seconds") for s in summaries.values()},
    }
