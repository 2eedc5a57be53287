"""The reward used by evaluation runs: the usual score plus what the offline report needs.

verl 0.9.1's validation dump (``trainer.validation_data_dir``) has the decoded prompt and response,
the ground truth, the score and every key the reward function returns, but not the sample's
``data_source`` nor the agent loop's tool record. This wrapper scores with
``verl_sod.rewards.compute_score`` (or, for a task of ``verl_sod.tasks``, that task's own reward)
and adds, on every sample and always with the same keys (verl builds its columns from the first
sample): ``data_source``, ``pred`` (if the scorer gave none), ``num_turns`` and the flattened
``extra_fields[AGENT_EXTRA_KEY]`` (``verl_sod.fields``) counts ``tool_calls``, ``tool_errors``,
``tool_timeouts``,
``tool_format_errors``, ``recovered`` (-1 when the loop left no record).

Use it with ``reward.custom_reward_function.path=pkg://verl_sod.eval.reward`` and
``reward.custom_reward_function.name=compute_score``; ``python -m verl_sod.eval run`` sets both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from verl_sod.fields import AGENT_EXTRA_KEY
from verl_sod.fields import TOOL_STATS_FIELDS as AGENT_KEYS

ScoreFn = Callable[..., Any]


def scorer_for(data_source: str) -> ScoreFn:
    """The reward for ``data_source``: its task's (``verl_sod.tasks``), else ``verl_sod.rewards``'."""
    from verl_sod.tasks import task_for_data_source

    task = task_for_data_source(data_source)
    if task is not None:
        return _task_scorer(task)
    from verl_sod.rewards import compute_score as rewards_score

    return rewards_score


def _task_scorer(task: Any) -> ScoreFn:
    def score(
        data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        result = dict(task.compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs))
        result.setdefault("pred", task.final_answer(solution_str or "") or "")
        return result

    return score


def agent_fields(extra_info: Any) -> dict[str, float]:
    """Flatten ``extra_info[AGENT_EXTRA_KEY]`` and ``num_turns`` into numbers (-1 when absent)."""
    info = extra_info if isinstance(extra_info, Mapping) else {}
    record = info.get(AGENT_EXTRA_KEY)
    record = record if isinstance(record, Mapping) else {}
    out = {key: float(record[key]) if key in record else -1.0 for key in AGENT_KEYS}
    turns = info.get("num_turns")
    try:
        out["num_turns"] = float(turns) if turns is not None else -1.0
    except (TypeError, ValueError):
        out["num_turns"] = -1.0
    return out


def score_sample(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """The task reward as a dict with ``score``, ``acc`` and ``pred`` always present."""
    result = scorer_for(data_source)(data_source, solution_str, ground_truth, extra_info, **kwargs)
    result = dict(result) if isinstance(result, Mapping) else {"score": float(result)}
    result.setdefault("acc", float(result["score"]))
    result.setdefault("pred", "")
    return result


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl's custom reward signature: the task reward plus ``data_source`` and the agent counts."""
    result = score_sample(data_source, solution_str, ground_truth, extra_info, **kwargs)
    result["data_source"] = str(data_source)
    result.update(agent_fields(extra_info))
    return result
