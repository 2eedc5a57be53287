"""The ``sod_tool_agent`` agent loop: verl's tool agent loop plus SOD step ids and tool outcomes.

Importing :mod:`verl_sod.agent.loop` registers ``sod_tool_agent`` in verl's agent-loop registry
(``verl_sod.register`` does so in every process). The names of the fields it writes live in
:mod:`verl_sod.fields`. Details: ``docs/agent.md``.
"""

from verl_sod.agent.loop import AGENT_NAME, SODToolAgentLoop
from verl_sod.agent.output import SODAgentLoopOutput

__all__ = ["AGENT_NAME", "SODAgentLoopOutput", "SODToolAgentLoop"]
