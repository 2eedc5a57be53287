"""GPQA route: the letter in the last box against the key (no real GPQA items here)."""

from __future__ import annotations

import pytest

from verl_sod.rewards import compute_score
from verl_sod.rewards.gpqa import choice_letter, key_letter

# (id, response, ground truth, expected acc, expected pred)
GPQA_CASES = [
    ("bare letter", "\\boxed{B}", "B", 1.0, "B"),
    ("text wrapper", "\\boxed{\\text{B}}", "B", 1.0, "B"),
    ("nested wrappers", "\\boxed{\\textbf{\\text{(B)}}}", "B", 1.0, "B"),
    ("parenthesised", "\\boxed{(B)}", "B", 1.0, "B"),
    ("closing paren", "\\boxed{B)}", "B", 1.0, "B"),
    ("letter and option text", "\\boxed{B. 42 eV}", "B", 1.0, "B"),
    ("lower-case alone", "\\boxed{b}", "B", 1.0, "B"),
    ("lower-case key", "\\boxed{C}", "c", 1.0, "C"),
    ("key in parens", "\\boxed{D}", "(D)", 1.0, "D"),
    ("wrong letter", "\\boxed{A}", "B", 0.0, "A"),
    ("two boxes, last counts", "\\boxed{B} hmm, \\boxed{C}", "B", 0.0, "C"),
    ("two boxes, last right", "\\boxed{C} hmm, \\boxed{B}", "B", 1.0, "B"),
    ("after think", "<think>\\boxed{A}</think>\\boxed{D}", "D", 1.0, "D"),
    ("unfinished think", "<think>\\boxed{D}", "D", 0.0, ""),
    ("no box", "The answer is B.", "B", 0.0, ""),
    ("letter out of range", "\\boxed{E}", "B", 0.0, ""),
    ("number in box", "\\boxed{42}", "B", 0.0, ""),
    ("two letters", "\\boxed{AB}", "A", 0.0, ""),
    ("prose in lower case", "\\boxed{a value of 3}", "A", 0.0, ""),
]


@pytest.mark.parametrize(
    ("response", "gold", "acc", "pred"), [c[1:] for c in GPQA_CASES], ids=[c[0] for c in GPQA_CASES]
)
def test_gpqa_route(response: str, gold: str, acc: float, pred: str) -> None:
    result = compute_score("gpqa_diamond", response, gold)
    assert (result["acc"], result["pred"], result["route"]) == (acc, pred, "gpqa"), result


@pytest.mark.parametrize("gold", ["E", "", "AB", None, "12"])
def test_malformed_key_scores_zero_with_reason(gold: object) -> None:
    result = compute_score("gpqa_diamond", "\\boxed{A}", gold)
    assert result["score"] == 0.0
    assert "ground truth" in result["error"]


def test_gpqa_prefix_routes_and_shaping() -> None:
    assert compute_score("gpqa_main_custom", "\\boxed{A}", "A")["acc"] == 1.0
    shaped = compute_score("gpqa_diamond", "\\boxed{A}", "B", extra_info={"num_turns": 4}, shaping="authors")
    assert shaped["score"] == pytest.approx(-0.9)


def test_helpers() -> None:
    assert choice_letter(None) is None
    assert choice_letter(" $\\mathrm{C}$ ") == "C"
    with pytest.raises(ValueError, match="A-D"):
        key_letter("F")
