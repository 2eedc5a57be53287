"""``SODAgentLoopOutput``: verl's ``AgentLoopOutput`` plus per-token step ids and tool outcomes.

verl's V1 agent-loop worker stores ``output.as_dict()`` in TransferQueue; every top-level tensor
of that dict becomes a per-sample (jagged) field of the trainer batch, and every field reaches the
actor's loss. This subclass adds three such tensors:

* ``sod_step_ids`` (int64, response-aligned): assistant step of each response token, -1 for
  tool/observation/role/boundary tokens. Consumed by ``verl_sod.algos.sod_loss``.
* ``sod_step_outcomes`` (int64, one entry per assistant step): tool outcome code of each step
  (:data:`verl_sod.fields.OUTCOME_CODES`: 0 none, 1 ok, 2 error, 3 timeout).
* ``sod_tool_stats`` (int64, fixed length): per-trajectory counters in
  :data:`verl_sod.fields.TOOL_STATS_FIELDS` order (see :mod:`verl_sod.algos.tool_metrics`).

The same information, human-readable, is in ``extra_fields[AGENT_EXTRA_KEY]`` (a dict; the key is in
``verl_sod.fields``), which verl
hands to reward managers (``tool_extra_fields``) and keeps in the batch's ``extra_fields``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

from verl_sod.fields import AGENT_BATCH_KEYS, STEP_IDS_KEY, STEP_OUTCOMES_KEY, TOOL_STATS_KEY

__all__ = ["SODAgentLoopOutput"]


class SODAgentLoopOutput(AgentLoopOutput):
    """``AgentLoopOutput`` with declared SOD fields (pydantic drops undeclared keyword args)."""

    sod_step_ids: list[int]
    sod_step_outcomes: list[int] = Field(default_factory=list)
    sod_tool_stats: list[int] = Field(default_factory=list)

    @classmethod
    def from_output(cls, output: AgentLoopOutput, **sod_fields: Any) -> SODAgentLoopOutput:
        """Wrap ``output`` without re-validating or copying it; the set-field record is kept."""
        values = {name: getattr(output, name) for name in type(output).model_fields}
        fields_set = set(output.model_fields_set) | set(sod_fields)
        return cls.model_construct(_fields_set=fields_set, **values, **sod_fields)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        for key in AGENT_BATCH_KEYS:
            out.pop(key, None)
        out[STEP_IDS_KEY] = torch.tensor(self.sod_step_ids, dtype=torch.int64)
        out[STEP_OUTCOMES_KEY] = torch.tensor(self.sod_step_outcomes, dtype=torch.int64)
        out[TOOL_STATS_KEY] = torch.tensor(self.sod_tool_stats, dtype=torch.int64)
        return out
