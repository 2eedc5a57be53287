"""Pure evaluation metrics over per-problem sample lists (no verl, no torch).

Conventions (also in docs/evaluation.md):

* ``avg@k``: mean over problems of the mean score of that problem's samples; the 95% interval is a
  normal approximation over problems, ``1.96 * std(problem means, ddof=1) / sqrt(P)`` (half-width;
  ``None`` with fewer than two problems). Samples are not treated as independent draws.
* ``pass@k``: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``, computed as
  the product ``prod_{i=n-c+1}^{n} (1 - k/i)``; a sample passes when its score is at least
  ``threshold`` (1.0 by default, so fractional code scores pass only when every test passed).
* task fields: any other number a task's reward returns (``-1`` = not recorded) is averaged over
  trajectories per benchmark, so a task reports its own measures without code here.
* ``maj@k``: majority vote over the non-empty extracted answers of the first ``k`` samples; a tie is
  won by the answer that appears first among those samples; the voted answer counts as correct when
  the first sample that gave it passes; a problem with no answer at all scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Z_95 = 1.959963984540054
TURN_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (0, 0, "0"),
    (1, 1, "1"),
    (2, 2, "2"),
    (3, 4, "3-4"),
    (5, 8, "5-8"),
    (9, 16, "9-16"),
    (17, None, ">16"),
)


@dataclass
class Sample:
    """One generation of one problem, as far as the metrics need it."""

    score: float
    pred: str | None = None
    tool_calls: int | None = None
    tool_errors: int | None = None
    recovered: bool | None = None
    num_turns: int | None = None
    response_length: int = 0
    passed: bool | None = None  # overrides the score threshold when set (e.g. the reward's ``acc``)
    task_fields: dict[str, float] = field(default_factory=dict)  # other numbers the task reward gave


def passes(sample: Sample, threshold: float = 1.0) -> bool:
    """Whether a sample counts as solved for pass@k and maj@k."""
    if sample.passed is not None:
        return sample.passed
    return sample.score >= threshold - 1e-9


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for ``c`` correct out of ``n`` samples (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``, plus ``n`` itself."""
    if n < 1:
        return []
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and 95% normal-approximation half-width (``None`` for fewer than two values)."""
    if not values:
        return float("nan"), None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, Z_95 * math.sqrt(var / len(values))


def avg_at_k(problems: Sequence[Sequence[Sample]]) -> tuple[float, float | None]:
    """avg@k: mean over problems of the per-problem mean score, with its 95% half-width."""
    means = [sum(s.score for s in samples) / len(samples) for samples in problems if samples]
    return mean_ci(means)


def pass_at_k_curve(problems: Sequence[Sequence[Sample]], threshold: float = 1.0) -> dict[int, float]:
    """Mean unbiased pass@k over problems for every k in :func:`k_values` of the smallest n."""
    problems = [p for p in problems if p]
    if not problems:
        return {}
    n_min = min(len(p) for p in problems)
    curve = {}
    for k in k_values(n_min):
        per_problem = [pass_at_k(len(p), sum(passes(s, threshold) for s in p), k) for p in problems]
        curve[k] = sum(per_problem) / len(per_problem)
    return curve


def majority_answer(preds: Iterable[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the one seen first; ``None`` if there is none."""
    counts: dict[str, int] = {}
    for pred in preds:
        if pred is None or str(pred).strip() == "":
            continue
        key = str(pred).strip()
        counts[key] = counts.get(key, 0) + 1  # dicts keep first-insertion order
    if not counts:
        return None
    best = max(counts.values())
    return next(answer for answer, count in counts.items() if count == best)


def maj_correct(samples: Sequence[Sample], k: int, threshold: float = 1.0) -> float:
    """1.0 when the majority answer of the first ``k`` samples is correct, else 0.0."""
    first = samples[:k]
    winner = majority_answer(s.pred for s in first)
    if winner is None:
        return 0.0
    voter = next(s for s in first if s.pred is not None and str(s.pred).strip() == winner)
    return 1.0 if passes(voter, threshold) else 0.0


def maj_at_k(problems: Sequence[Sequence[Sample]], k: int, threshold: float = 1.0) -> float | None:
    """Mean over problems of :func:`maj_correct`; ``None`` when no sample has an answer field."""
    problems = [p for p in problems if p]
    if not problems or all(s.pred is None for p in problems for s in p):
        return None
    return sum(maj_correct(p, k, threshold) for p in problems) / len(problems)


def turn_bucket(tool_calls: int) -> str:
    """Label of the tool-call bucket (0, 1, 2, 3-4, 5-8, 9-16, >16)."""
    for low, high, label in TURN_BUCKETS:
        if tool_calls >= low and (high is None or tool_calls <= high):
            return label
    return TURN_BUCKETS[0][2]


def tool_calls_of(sample: Sample) -> int | None:
    """Tool calls of a trajectory; from ``num_turns`` (2 + 2 per call) when not recorded."""
    if sample.tool_calls is not None:
        return sample.tool_calls
    if sample.num_turns is not None:
        return max(0, (sample.num_turns - 2) // 2)
    return None


def by_tool_calls(problems: Sequence[Sequence[Sample]]) -> dict[str, dict[str, float]]:
    """Per bucket of tool calls: number of trajectories and their mean score (trajectory level)."""
    buckets: dict[str, list[float]] = {}
    for samples in problems:
        for s in samples:
            calls = tool_calls_of(s)
            if calls is not None:
                buckets.setdefault(turn_bucket(calls), []).append(s.score)
    order = [label for _, _, label in TURN_BUCKETS]
    return {
        label: {"trajectories": len(buckets[label]), "mean_score": sum(buckets[label]) / len(buckets[label])}
        for label in order
        if label in buckets
    }


def agent_metrics(problems: Sequence[Sequence[Sample]]) -> dict[str, float | None]:
    """Tool calls per trajectory, tool error rate, recovery rate and mean response length.

    ``tool_error_rate`` is failed calls / calls over all trajectories (a ratio of sums);
    ``recovery_rate`` is recovered trajectories / trajectories with at least one failed call.
    Values are ``None`` when the samples carry no such record.
    """
    samples = [s for p in problems for s in p]
    calls = [c for c in (tool_calls_of(s) for s in samples) if c is not None]
    with_errors = [s for s in samples if s.tool_errors is not None and s.tool_calls is not None]
    failed = [s for s in with_errors if (s.tool_errors or 0) > 0]  # not None: filtered above
    recorded = [s for s in failed if s.recovered is not None]
    n_calls = sum(s.tool_calls or 0 for s in with_errors)
    return {
        "tool_calls_per_traj": sum(calls) / len(calls) if calls else None,
        "tool_error_rate": sum(s.tool_errors or 0 for s in with_errors) / n_calls if n_calls else None,
        "recovery_rate": sum(bool(s.recovered) for s in recorded) / len(recorded) if recorded else None,
        "mean_response_length": sum(s.response_length for s in samples) / len(samples) if samples else None,
    }


def task_field_means(problems: Sequence[Sequence[Sample]]) -> dict[str, float]:
    """Per numeric field a task reward reported (e.g. BFCL's ``turns_completed``): its mean over
    the trajectories that carry it (trajectory level, like the agent metrics)."""
    values: dict[str, list[float]] = {}
    for samples in problems:
        for s in samples:
            for key, value in s.task_fields.items():
                values.setdefault(key, []).append(value)
    return {key: sum(v) / len(v) for key, v in sorted(values.items())}


def summarize(problems: Sequence[Sequence[Sample]], threshold: float = 1.0) -> dict[str, Any]:
    """Every metric of one group of problems (one benchmark, or all of them)."""
    problems = [p for p in problems if p]
    n_min = min((len(p) for p in problems), default=0)
    avg, half_width = avg_at_k(problems)
    curve = pass_at_k_curve(problems, threshold)
    return {
        "problems": len(problems),
        "samples": sum(len(p) for p in problems),
        "k": n_min,
        "avg_at_k": avg,
        "avg_at_k_ci95": half_width,
        "pass_at_k": {str(k): v for k, v in curve.items()},
        "maj_at_k": maj_at_k(problems, n_min, threshold) if n_min else None,
        "by_tool_calls": by_tool_calls(problems),
        **agent_metrics(problems),
        "task_fields": task_field_means(problems),
    }


def group_summaries(
    groups: Mapping[str, Sequence[Sequence[Sample]]], threshold: float = 1.0
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per benchmark, plus ``all`` when there is more than one benchmark."""
    out = {name: summarize(problems, threshold) for name, problems in sorted(groups.items())}
    if len(groups) > 1:
        out["all"] = summarize([p for problems in groups.values() for p in problems], threshold)
    return out
