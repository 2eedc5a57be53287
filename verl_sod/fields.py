"""Names of the per-trajectory tensor fields verl_sod adds to verl's trainer batch.

The ``sod_tool_agent`` loop writes them (``verl_sod.agent.output``); the ``sod`` loss and the tool
metrics read them in the actor's micro-batch. One module, imported by both sides, with no
dependencies, so neither side has to import the other.
"""

#: per response token: index of the assistant step it belongs to, -1 for tool/observation tokens
STEP_IDS_KEY = "sod_step_ids"
#: per assistant step: outcome code of the tool call that step made (see verl_sod.agent.trace)
STEP_OUTCOMES_KEY = "sod_step_outcomes"
#: per trajectory: tool calls, errors, time-outs, format errors, recovered
TOOL_STATS_KEY = "sod_tool_stats"
