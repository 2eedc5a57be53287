"""An integer calculator for the synthetic tool task; ``calc_tool.py`` exposes it to the model.

verl's tool agent loop loads ``verl_sod/tasks/chain_calc/calc_tool.py`` through
``actor_rollout_ref.rollout.multi_turn.function_tool_path`` (:data:`TOOL_FILE`). The expression is
parsed with :mod:`ast` and only integer literals, ``+ - * //``, unary minus and parentheses are
evaluated: nothing is ever ``eval``'d. Any other input
returns an ``error: ...`` string, which becomes the model's observation; the tool never raises.
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path

TOOL_FILE = str(Path(__file__).with_name("calc_tool.py"))
MAX_ABS = 10**9
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
}


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.FloorDiv) and right == 0:
            raise ValueError("division by zero")
        result = _BINARY[type(node.op)](left, right)
        if abs(result) > MAX_ABS:
            raise ValueError("result too large")
        return result
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: str) -> str:
    """The observation for ``expression``: the integer, or ``error: <reason>``."""
    if not isinstance(expression, str) or len(expression) > 200:
        return "error: expression must be a string of at most 200 characters"
    try:
        return str(_evaluate(ast.parse(expression.strip(), mode="eval")))
    except (SyntaxError, ValueError, RecursionError) as err:
        return f"error: {err.__class__.__name__ if isinstance(err, SyntaxError) else err}"


def tool_schemas() -> list[dict]:
    """The tools list exactly as verl's tool agent loop renders it into the prompt."""
    from verl.tools.function_tool import load_function_tools_from_path

    return [
        t.tool_schema.model_dump(exclude_unset=True, exclude_none=True)
        for t in load_function_tools_from_path(TOOL_FILE)
    ]
