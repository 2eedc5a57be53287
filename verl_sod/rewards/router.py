"""``compute_score``: verl's custom reward function, routed by data source.

Every route returns the same keys (verl builds its per-sample reward columns from the first
sample's keys, so mixed batches need one schema): ``score``, ``acc``, ``pred``, ``pass_rate``,
``has_answer``, ``timed_out``, ``route`` and ``error``. See docs/rewards-and-data.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from verl_sod.rewards import answers, gpqa
from verl_sod.rewards.math_grader import grade_math

logger = logging.getLogger(__name__)
_WARNED_MISSING_TRUTH: set[str] = set()

MATH_SOURCES = frozenset(
    {
        "AIME2024",
        "AIME2025",
        "math_dapo",
        "math",
        "math_dapo_reasoning",
        "mega-science",
        "openai/gsm8k",
        "lighteval/MATH",
        "DigitalLearningGmbH/MATH-lighteval",
        "HuggingFaceH4/MATH-500",
        "numina_aops_forum",
        "numina_synthetic_math",
        "numina_amc_aime",
        "numina_synthetic_amc",
        "numina_cn_k12",
        "numina_olympiads",
    }
)
GPQA_SOURCES = frozenset({"gpqa_diamond"})
CODE_SOURCES = frozenset({"LiveCodeBench_v6"})
PATTERN_RULES = (
    ("names starting with 'aime'", "math"),
    ("names starting with 'gpqa'", "gpqa"),
    ("names containing 'livecodebench' or 'code'", "code"),
)
OPTIONS = {
    "shaping": None,
    "math_timeout_s": 5.0,
    "math_isolation": "process",
    "code_scoring": "fraction",
    "code_timeout_s": 6.0,
    "code_total_s": 60.0,
    "code_memory_mb": 2048,
}


def route_for(data_source: str) -> str:
    """``"math"``, ``"gpqa"`` or ``"code"``; a ValueError names the known sources otherwise."""
    name = str(data_source)
    lower = name.lower()
    if name in MATH_SOURCES or lower.startswith("aime"):
        return "math"
    if name in GPQA_SOURCES or lower.startswith("gpqa"):
        return "gpqa"
    if name in CODE_SOURCES or "code" in lower:
        return "code"
    known = ", ".join(sorted(MATH_SOURCES | GPQA_SOURCES | CODE_SOURCES))
    patterns = "; ".join(f"{rule} -> {route}" for rule, route in PATTERN_RULES)
    raise ValueError(f"no reward for data_source {name!r}. Known sources: {known}. Patterns: {patterns}")


def _options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(OPTIONS)
    for key, value in kwargs.items():
        if key in options:
            options[key] = value
        elif key.startswith(("math_", "code_")):
            raise ValueError(f"unknown reward option {key!r}; options: {', '.join(OPTIONS)}")
    if options["shaping"] not in (None, "none", "authors"):
        raise ValueError(f"shaping must be None or 'authors', got {options['shaping']!r}")
    if options["code_scoring"] not in ("fraction", "all"):
        raise ValueError(f"code_scoring must be 'fraction' or 'all', got {options['code_scoring']!r}")
    return options


def _result(route: str, correct: bool, pred: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "score": 1.0 if correct else 0.0,
        "acc": 1.0 if correct else 0.0,
        "pred": pred or "",
        "pass_rate": fields.get("pass_rate", 1.0 if correct else 0.0),
        "has_answer": 0.0 if pred is None else 1.0,
        "timed_out": 1.0 if fields.get("timed_out") else 0.0,
        "route": route,
        "error": fields.get("error", ""),
    }


def authors_shaped_score(correct: bool, num_turns: Any) -> float:
    """The SOD authors' reward: +1 correct; -1 wrong, lifted by 0.1 per tool call up to -0.6.

    ``num_turns`` is verl's count (user + assistant turns + 1, so 2 with no tool call and 2 more per
    call); ``(num_turns - 2) / 2`` is the number of tool calls. Unknown turns: -1.
    """
    if correct:
        return 1.0
    try:
        turns = float(num_turns)
    except (TypeError, ValueError):
        return -1.0
    return min(-0.6, -1.0 + (turns - 2.0) / 2.0 * 0.1)


def _missing_truth(data_source: str, ground_truth: Any) -> str:
    message = (
        f"no ground truth for data_source {data_source!r} (got {ground_truth!r}): the row's "
        "reward_model.ground_truth must hold the answer; re-prepare the data with `python -m verl_sod.data`"
    )
    if data_source not in _WARNED_MISSING_TRUTH:  # once per source and process, not once per sample
        _WARNED_MISSING_TRUTH.add(data_source)
        logger.warning("%s", message)
    return message


def _score_math(data_source: str, response: str, ground_truth: Any, options: dict) -> dict[str, Any]:
    pred = answers.final_boxed_answer(response)
    if pred is None and data_source == "openai/gsm8k":
        pred = answers.gsm8k_hash_answer(response)
    gold = ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth
    gold = gold[0] if isinstance(gold, list | tuple) and gold else gold
    if gold is None or isinstance(gold, list | tuple) or not str(gold).strip():
        return _result("math", False, pred, error=_missing_truth(data_source, ground_truth))
    gold = str(gold)
    if pred is None:
        return _result("math", False, None, error="no boxed answer")
    verdict = grade_math(
        pred, gold, timeout_s=float(options["math_timeout_s"]), isolation=options["math_isolation"]
    )
    return _result("math", verdict.correct, pred, timed_out=verdict.timed_out, error=verdict.error)


def _score_gpqa(response: str, ground_truth: Any) -> dict[str, Any]:
    try:
        key = gpqa.key_letter(ground_truth)
    except ValueError as exc:
        return _result("gpqa", False, None, error=str(exc))
    box = answers.final_boxed_answer(response)
    letter = gpqa.choice_letter(box)
    if letter is None:
        error = "no boxed answer" if box is None else f"box does not name a choice: {box[:40]!r}"
        return _result("gpqa", False, None, error=error)
    return _result("gpqa", letter == key, letter)


def _score_code(response: str, ground_truth: Any, extra_info: Any, kwargs: Mapping, options: dict) -> dict:
    from verl_sod.rewards.code import CodeLimits, parse_tests, run_tests
    from verl_sod.rewards.executors import resolve_executor

    try:
        tests = parse_tests(ground_truth)
    except ValueError as exc:
        return _result("code", False, None, pass_rate=0.0, error=f"malformed ground truth: {exc}")
    code = answers.final_python_block(response)
    if code is None:
        return _result("code", False, None, pass_rate=0.0, error="no python code block")
    limits = CodeLimits(
        timeout_s=float(options["code_timeout_s"]),
        total_s=float(options["code_total_s"]),
        memory_mb=int(options["code_memory_mb"]),
    )
    outcome = run_tests(code, tests, resolve_executor(kwargs, extra_info), limits)
    all_passed = outcome.passed == outcome.total
    result = _result("code", all_passed, "", pass_rate=outcome.fraction, timed_out=outcome.timed_out)
    result["error"] = outcome.error
    result["score"] = outcome.fraction if options["code_scoring"] == "fraction" else float(all_passed)
    return result


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl's custom reward signature; options are keyword arguments (see ``OPTIONS``).

    Pass them through ``reward.custom_reward_function.reward_kwargs``; code routes also take
    ``executor`` (an object with ``run_sync``) or ``sandbox`` (``SandboxConfig`` fields).
    """
    route = route_for(data_source)
    options = _options(kwargs)
    response = solution_str or ""
    if route == "math":
        result = _score_math(str(data_source), response, ground_truth, options)
    elif route == "gpqa":
        result = _score_gpqa(response, ground_truth)
    else:
        return _score_code(response, ground_truth, extra_info, kwargs, options)
    if options["shaping"] == "authors":
        turns = extra_info.get("num_turns") if isinstance(extra_info, Mapping) else None
        result["score"] = authors_shaped_score(result["acc"] == 1.0, turns)
    return result
