"""Instruction prompts for tool-integrated reasoning (our own wording of the paper's set-up).

The system message tells the model it may run Python through the ``code_interpreter`` tool; the
user message is the problem followed by one line saying where the final answer goes.
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You solve problems by reasoning step by step and running Python when it helps. You have a tool, "
    "`code_interpreter`, that executes a complete Python program and returns what it printed, so "
    "print every value you want to see. Use it to compute, to check intermediate results and to test "
    "ideas instead of guessing what code would output; you may call it as many times as you need. "
    "Each call starts from a fresh interpreter. When you are confident, stop calling the tool and "
    "write your final answer in the format the user asks for."
)

ANSWER_FORMATS = {
    "math": "Put your final answer, and nothing else, inside \\boxed{}, for example \\boxed{42}.",
    "gpqa": "Put only the letter of the correct option inside \\boxed{}, for example \\boxed{C}.",
    "code_stdin": (
        "End your reply with the complete solution in a single ```python code block. The program must "
        "read the input from standard input and print the answer to standard output."
    ),
    "code_functional": (
        "End your reply with the complete solution in a single ```python code block that defines the "
        "class and method of the starter code, with the same signature. Do not read from standard input."
    ),
}


def answer_format(kind: str) -> str:
    """The closing instruction for ``kind`` (a key of :data:`ANSWER_FORMATS`)."""
    try:
        return ANSWER_FORMATS[kind]
    except KeyError:
        raise ValueError(f"unknown prompt kind {kind!r}; known: {', '.join(ANSWER_FORMATS)}") from None


def chat_prompt(problem: str, kind: str, *, add_format: bool = True) -> list[dict[str, str]]:
    """System and user messages for one problem."""
    user = problem.strip()
    if add_format:
        user = f"{user}\n\n{answer_format(kind)}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
