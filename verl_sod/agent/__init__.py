"""The ``sod_tool_agent`` agent loop: verl's tool agent loop plus SOD step ids and tool outcomes.

Importing :mod:`verl_sod.agent.loop` registers ``sod_tool_agent`` in verl's agent-loop registry
(``verl_sod.register`` does so in every process). Details: ``docs/agent.md``.
"""

from verl_sod.agent.loop import AGENT_NAME, SODToolAgentLoop
from verl_sod.agent.metrics import tool_metrics, tool_metrics_values
from verl_sod.agent.output import (
    STEP_IDS_KEY,
    STEP_OUTCOMES_KEY,
    TOOL_STATS_KEY,
    SODAgentLoopOutput,
)
from verl_sod.agent.trace import OUTCOME_CODES, TOOL_STATS_FIELDS

__all__ = [
    "AGENT_NAME",
    "OUTCOME_CODES",
    "STEP_IDS_KEY",
    "STEP_OUTCOMES_KEY",
    "TOOL_STATS_FIELDS",
    "TOOL_STATS_KEY",
    "SODAgentLoopOutput",
    "SODToolAgentLoop",
    "tool_metrics",
    "tool_metrics_values",
]
