"""verl tools shipped by verl_sod (``BaseTool`` subclasses named in a ``tool_config_path`` YAML)."""

from verl_sod.tools.code_interpreter import TOOL_NAME, CodeInterpreterTool

__all__ = ["TOOL_NAME", "CodeInterpreterTool"]
