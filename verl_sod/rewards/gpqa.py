"""Multiple-choice (GPQA-Diamond) answers: the letter in the last box, compared to the key.

Accepted box contents: ``B``, ``(B)``, ``B)``, ``B.``, ``\\text{B}``, ``\\textbf{(B)}``, ``\\mathrm{B}``,
and a letter followed by the option's text (``B. 42 eV``, ``(B) 42 eV``). Anything else, such as a
bare number or two letters, is not a choice.
"""

from __future__ import annotations

import re

CHOICES = "ABCD"
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|textrm)\s*\{([^{}]*)\}")
_LETTER = re.compile(r"^\(?\s*([A-Da-d])\s*\)?(?:$|[\s.:)\]])")


def choice_letter(box_content: str | None) -> str | None:
    """The option letter a box names, upper-cased, or None."""
    if box_content is None:
        return None
    text = box_content.strip()
    for _ in range(3):  # nested wrappers such as \textbf{\text{B}}
        text = _WRAPPER.sub(r"\1", text)
    text = text.strip().strip("$").strip()
    match = _LETTER.match(text)
    if match is None:
        return None
    letter = match.group(1)
    rest = text[match.end() :].strip()
    if letter.islower() and rest == "":
        letter = letter.upper()
    elif letter.islower():
        return None  # "a value of ..." is prose, not a choice
    return letter


def key_letter(ground_truth: object) -> str:
    """The ground-truth letter; raises ValueError when it is not one of A-D."""
    text = str(ground_truth).strip().strip("()").strip().upper()
    if len(text) != 1 or text not in CHOICES:
        raise ValueError(f"GPQA ground truth must be one letter A-D, got {ground_truth!r}")
    return text
