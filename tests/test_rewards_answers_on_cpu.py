"""Final-answer extraction: boxes (nested, several, malformed), reasoning blocks, code blocks."""

from __future__ import annotations

import pytest

from verl_sod.rewards import answers

BOXED_CASES = [
    ("plain", "so the answer is \\boxed{42}.", "42"),
    ("nested braces", "\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    (
        "deeply nested",
        "\\boxed{\\left\\{x \\mid x^{2^{3}} > 1\\right\\}}",
        "\\left\\{x \\mid x^{2^{3}} > 1\\right\\}",
    ),
    ("two boxes, last wins", "first \\boxed{1} then \\boxed{2}", "2"),
    ("fbox", "\\fbox{7}", "7"),
    ("space form", "\\boxed 9 is it", "9"),
    ("space before brace", "\\boxed {12}", "12"),
    ("no box", "the answer is 42", None),
    ("unclosed box", "\\boxed{12", None),
    ("unclosed box after a good one", "\\boxed{3} and \\boxed{4", "3"),
    ("other command", "\\boxedA{1}", None),
    ("after think", "<think>maybe \\boxed{1}</think>final \\boxed{2}", "2"),
    ("box only inside think", "<think>maybe \\boxed{1}</think>no box here", None),
    ("unfinished think", "<think>thinking \\boxed{5} and then cut", None),
    ("only a closing tag", "reasoning \\boxed{1}</think> answer \\boxed{8}", "8"),
    ("two think blocks", "<think>a</think>\\boxed{1}<think>b</think>\\boxed{3}", "3"),
    ("whitespace stripped", "\\boxed{  5 }", "5"),
    ("escaped brace inside", "\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BOXED_CASES], ids=[c[0] for c in BOXED_CASES])
def test_final_boxed_answer(text: str, expected: str | None) -> None:
    assert answers.final_boxed_answer(text) == expected


CODE_CASES = [
    ("one block", "here\n```python\nprint(1)\n```", "print(1)\n"),
    ("last block wins", "```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```", "print(2)\n"),
    ("py tag", "```py\nx = 1\n```", "x = 1\n"),
    ("python3 tag, capitals", "```Python3\nx = 2\n```", "x = 2\n"),
    ("untagged block ignored", "```\nprint(1)\n```", None),
    ("other language ignored", "```cpp\nint main(){}\n```", None),
    ("unclosed block", "```python\nprint(1)\n", None),
    ("empty block", "```python\n\n```", None),
    ("inside think only", "<think>```python\nprint(1)\n```</think>done", None),
    ("after think", "<think>```python\nprint(1)\n```</think>```python\nprint(3)\n```", "print(3)\n"),
    ("unfinished think", "<think>```python\nprint(1)\n```", None),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CODE_CASES], ids=[c[0] for c in CODE_CASES])
def test_final_python_block(text: str, expected: str | None) -> None:
    assert answers.final_python_block(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("so #### 72", "72"), ("#### 1,000.", "1,000"), ("no marker", None), ("#### 1 then #### 2", "2")],
)
def test_gsm8k_hash_answer(text: str, expected: str | None) -> None:
    assert answers.gsm8k_hash_answer(text) == expected
