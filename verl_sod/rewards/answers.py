"""Pure text helpers: where a response's final answer lives.

A response may open with a reasoning block. Only the text after the last ``</think>`` is searched
for an answer; a response that opens a ``<think>`` block and never closes it was cut off while
reasoning and has no final answer. Boxed answers are read with brace matching, so
``\\boxed{\\frac{1}{2}}`` yields ``\\frac{1}{2}``; when a response boxes several answers, the last
one counts.
"""

from __future__ import annotations

import re

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_CODE_FENCE = re.compile(r"```[ \t]*(python3?|py)[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def final_segment(response: str) -> str | None:
    """The part of ``response`` that may hold the final answer, or None if reasoning never ended."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in response:
        return None
    return response


def _match_braces(text: str, open_at: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``open_at``; escaped braces do not count."""
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _boxed_at(text: str, start: int, command: str) -> str | None:
    """The argument of the box command starting at ``start``, or None when it is malformed."""
    i = start + len(command)
    if i < len(text) and (text[i].isalpha()):
        return None  # another command that merely starts with \boxed, e.g. \boxedA
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = _match_braces(text, i)
        return None if end is None else text[i + 1 : end - 1]
    # `\boxed 5` form: the argument runs to the next whitespace or dollar sign.
    match = re.match(r"[^\s$]+", text[i:])
    return match.group(0) if match and i > start + len(command) else None


def all_boxed(text: str) -> list[str]:
    """Every well-formed ``\\boxed{...}`` / ``\\fbox{...}`` argument in ``text``, in order."""
    found: list[tuple[int, str]] = []
    for command in _BOX_COMMANDS:
        for match in re.finditer(re.escape(command), text):
            content = _boxed_at(text, match.start(), command)
            if content is not None:
                found.append((match.start(), content))
    return [content for _, content in sorted(found)]


def last_boxed(text: str) -> str | None:
    """The last boxed argument in ``text`` (stripped), or None if there is none."""
    boxes = all_boxed(text)
    return boxes[-1].strip() if boxes else None


def final_boxed_answer(response: str) -> str | None:
    """The last boxed answer after the reasoning block, or None."""
    segment = final_segment(response)
    return None if segment is None else last_boxed(segment)


def final_python_block(response: str) -> str | None:
    """The last closed ```python fenced block after the reasoning block, or None."""
    segment = final_segment(response)
    if segment is None:
        return None
    blocks = _CODE_FENCE.findall(segment)
    if not blocks:
        return None
    code = blocks[-1][1]
    return code if code.strip() else None


_GSM8K_HASHES = re.compile(r"####\s*([\-\d\.,]+)")


def gsm8k_hash_answer(response: str) -> str | None:
    """GSM8K's ``#### 42`` answer style, used only when a GSM8K response has no box."""
    segment = final_segment(response)
    if segment is None:
        return None
    found = _GSM8K_HASHES.findall(segment)
    return found[-1].strip().rstrip(".") if found else None
