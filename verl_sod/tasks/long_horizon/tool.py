"""``calc``: the stateful long-horizon calculator as a verl ``BaseTool``.

verl 0.9.1's ``ToolAgentLoop._call_tool`` calls ``create(create_kwargs=...)`` (from the row's
``extra_info.tools_kwargs.calc.create_kwargs``), ``execute(instance_id, args, agent_data=...)`` and
``release`` once *per call*, so the per-trajectory :class:`~.env.CalcSession` is keyed by the
trajectory's ``agent_data`` object (held weakly; created on the first call). Its public record,
``agent_data.extra_fields["long_horizon"]`` (horizon, fault mode, one entry per call), goes with
the trajectory to the reward (verl merges ``extra_fields`` into ``extra_info``) and the batch.

Every call returns metrics ``{"status": ok|error|timeout, "fault": <label>, "call_index": k,
"attempt": n, "horizon": H, "injected": bool}``; ``sod_tool_agent`` classifies the call by
``status`` (an injected time-out is a ``timeout`` outcome; nothing waits). Loaded through
``verl_sod/config/tools/long_horizon.yaml`` (``multi_turn.tool_config_path``).
"""

from __future__ import annotations

import weakref
from typing import Any
from uuid import uuid4

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from verl_sod.tasks.long_horizon.env import INJECTED, CalcSession, FaultConfig
from verl_sod.tasks.long_horizon.task import EXTRA_KEY, TOOL_SCHEMA

_FAULT_FIELDS = ("p_flaky", "p_timeout", "p_corrupt", "probe_call", "probe_kind")


def session_from_kwargs(kwargs: dict[str, Any]) -> CalcSession:
    """A session from ``create_kwargs``; a missing key is a clear error."""
    missing = [k for k in ("start", "horizon", "problem_id") if k not in kwargs]
    if missing:
        raise ValueError(
            f"calc: create_kwargs lack {missing}; write the data with "
            "verl_sod.tasks.long_horizon.task.write_parquet (extra_info.tools_kwargs.calc.create_kwargs)"
        )
    faults = FaultConfig(**{k: kwargs[k] for k in _FAULT_FIELDS if k in kwargs and kwargs[k] is not None})
    return CalcSession(int(kwargs["start"]), int(kwargs["horizon"]), int(kwargs["problem_id"]), faults)


class LongHorizonCalcTool(BaseTool):
    """See the module docstring."""

    def __init__(
        self, config: dict[str, Any] | None = None, tool_schema: OpenAIFunctionToolSchema | None = None
    ):
        schema = tool_schema or OpenAIFunctionToolSchema.model_validate(TOOL_SCHEMA)
        super().__init__(config or {}, schema)
        self._kwargs: dict[str, dict[str, Any]] = {}
        self._by_trajectory: weakref.WeakKeyDictionary[Any, CalcSession] = weakref.WeakKeyDictionary()
        self._sessions: dict[str, CalcSession] = {}  # used only without agent_data (direct calls)

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid4())
        self._kwargs[instance_id] = dict(kwargs.get("create_kwargs") or kwargs)
        return instance_id, ToolResponse()

    def _session(self, instance_id: str, agent_data: Any) -> tuple[CalcSession, dict[str, Any]]:
        store = getattr(agent_data, "extra_fields", None)
        if store is None:
            if instance_id not in self._sessions:
                self._sessions[instance_id] = session_from_kwargs(self._kwargs.get(instance_id, {}))
            return self._sessions[instance_id], {}
        if agent_data not in self._by_trajectory:
            session = session_from_kwargs(self._kwargs.get(instance_id, {}))
            self._by_trajectory[agent_data] = session
            store[EXTRA_KEY] = {"horizon": session.horizon, "fault_mode": session.faults.mode, "calls": []}
        return self._by_trajectory[agent_data], store[EXTRA_KEY]

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        session, record = self._session(instance_id, kwargs.get("agent_data"))
        result = session.call(parameters)
        if record:
            record["calls"] = list(session.calls)
        metrics = {
            "status": result.status,
            "fault": result.fault,
            "call_index": result.k,
            "attempt": result.attempt,
            "horizon": session.horizon,
            "injected": result.fault in INJECTED,
        }
        return ToolResponse(text=result.text), 0.0, metrics

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._kwargs.pop(instance_id, None)
