"""Routing by data source, option checks, and one result schema for every route."""

from __future__ import annotations

import pytest

from verl_sod.rewards import compute_score, route_for

ROUTES = [
    ("AIME2024", "math"),
    ("AIME2025", "math"),
    ("aime25", "math"),
    ("math_dapo", "math"),
    ("mega-science", "math"),
    ("openai/gsm8k", "math"),
    ("lighteval/MATH", "math"),
    ("DigitalLearningGmbH/MATH-lighteval", "math"),
    ("HuggingFaceH4/MATH-500", "math"),
    ("numina_olympiads", "math"),
    ("gpqa_diamond", "gpqa"),
    ("GPQA-extended", "gpqa"),
    ("LiveCodeBench_v6", "code"),
    ("livecodebench_v5", "code"),
    ("deepcoder_code", "code"),
    ("codecontests", "code"),
    ("CodeForces", "code"),
]


@pytest.mark.parametrize(("source", "route"), ROUTES)
def test_route_for(source: str, route: str) -> None:
    assert route_for(source) == route


@pytest.mark.parametrize("source", ["searchR1_nq", "hiyouga/geometry3k", "", "mathematics"])
def test_unknown_source_names_the_known_ones(source: str) -> None:
    with pytest.raises(ValueError) as info:
        compute_score(source, "\\boxed{1}", "1")
    message = str(info.value)
    assert repr(source) in message
    for known in ("AIME2024", "gpqa_diamond", "LiveCodeBench_v6", "math_dapo", "mega-science", "'code'"):
        assert known in message


@pytest.mark.parametrize(
    "options",
    [{"shaping": "paper"}, {"code_scoring": "half"}, {"math_isolation": "thread"}, {"math_timeout": 3}],
)
def test_bad_options_are_rejected(options: dict) -> None:
    with pytest.raises(ValueError):
        compute_score("AIME2024", "\\boxed{1}", "1", **options)


def test_unrelated_keywords_are_ignored() -> None:
    """verl may pass its own keywords (e.g. reward_router_address) to a custom reward function."""
    result = compute_score("AIME2024", "\\boxed{1}", "1", reward_router_address=None)
    assert result["score"] == 1.0


class _NoRun:
    def run_sync(self, code, stdin, timeout_s):  # pragma: no cover - never called
        raise AssertionError("must not run")


def test_every_route_returns_the_same_keys() -> None:
    """verl builds reward columns from the first sample's keys: mixed batches need one schema."""
    results = [
        compute_score("AIME2024", "\\boxed{1}", "1"),
        compute_score("AIME2024", "no answer", "1"),
        compute_score("gpqa_diamond", "\\boxed{A}", "A"),
        compute_score("gpqa_diamond", "\\boxed{A}", "Z"),
        compute_score(
            "LiveCodeBench_v6", "no code", '{"inputs": ["1"], "outputs": ["1"]}', executor=_NoRun()
        ),
        compute_score("LiveCodeBench_v6", "```python\nx\n```", "not json", executor=_NoRun()),
    ]
    keys = {frozenset(r) for r in results}
    assert keys == {
        frozenset({"score", "acc", "pred", "pass_rate", "has_answer", "timed_out", "route", "error"})
    }
    for result in results:
        assert isinstance(result["score"], float) and isinstance(result["acc"], float)
        assert isinstance(result["pred"], str) and isinstance(result["error"], str)
