"""The ``calc`` function tool, in a file of its own for ``multi_turn.function_tool_path``."""

from verl.tools.function_tool import function_tool

from verl_sod.tasks.chain_calc.calculator import evaluate


@function_tool
def calc(expression: str) -> str:
    """Integer calculator.

    Args:
        expression: integer arithmetic such as 12*3
    """
    return evaluate(expression)
