"""Per-trajectory bookkeeping of the ``sod_tool_agent`` loop: step ids and tool outcomes.

Step ids
    verl's tool agent loop keeps ``response_mask`` in step with its Continuous Token (CT) stream:
    every merge returns a ``MergeResult`` (tokens trimmed from the end of the runtime prefix,
    boundary tokens inserted, tokens appended) and ``align_response_metadata`` applies the same
    edits to the mask. :class:`TrajectoryTrace` applies those edits a second time to a parallel
    list of step ids (assistant turn index for appended assistant tokens, -1 for everything else).

    verl sometimes computes a merge and then drops it (a tool response that would overflow the
    response budget). The trace therefore *stages* each merge under the identity of the mask list
    verl got back, and commits it only when verl stored that very list object in
    ``agent_data.response_mask``. No verl control flow is re-implemented.

    As a cross-check, :func:`step_ids_from_runs` derives the ids again from the final mask runs
    and the number of tokens each assistant turn appended; the loop uses it as the fallback when
    the mirrored ids disagree with the final mask.

Tool outcomes
    One :class:`ToolCallRecord` per executed tool call, tagged with the assistant step that made
    it. Outcomes: ``ok``, ``error`` (malformed call, unknown tool, bad or missing arguments,
    failing code, crashing tool) and ``timeout``. A step without a tool call has outcome ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verl_sod.fields import (
    FAILED_OUTCOMES,
    FAULT_NONE,
    OUTCOME_CODES,
    OUTCOME_ERROR,
    OUTCOME_NONE,
    OUTCOME_OK,
    OUTCOME_TIMEOUT,
)

# the outcome codes are ordered by severity: a step with several calls reports its worst one
_SEVERITY = OUTCOME_CODES


@dataclass(frozen=True)
class ToolCallRecord:
    """One executed tool call: the step (assistant turn, 0-based) that made it and its outcome.

    ``format_error`` marks calls rejected before reaching the tool (malformed JSON, unknown tool,
    arguments that are not an object or lack a required key).
    """

    step: int
    name: str
    outcome: str
    format_error: bool = False
    detail: str = ""
    queue_s: float = 0.0  # waiting for a sandbox slot (not counted by the time-out)
    active_s: float = 0.0  # the call's own time (what the time-out bounds)
    fault: str = FAULT_NONE  # the tool's own fault label (metrics key ``fault``), if it reports one

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES


def apply_merge(step_ids: list[int], merge_result: Any, step: int) -> list[int]:
    """Step ids after one CT merge, mirroring ``ContinuousTokenBuilder.align_response_metadata``.

    ``merge_result`` is verl's ``MergeResult``; ``step`` labels appended assistant tokens.
    """
    removed = int(merge_result.removed_prefix_token_count)
    out = step_ids[: len(step_ids) - removed] if removed else list(step_ids)
    out.extend([-1] * len(merge_result.inserted_token_ids))
    label = step if merge_result.kind == "assistant" else -1
    out.extend([label] * int(merge_result.appended_token_count))
    return out


def mask_runs(mask: list[int]) -> list[tuple[int, int]]:
    """``(start, length)`` of every maximal run of 1s in ``mask``."""
    runs: list[tuple[int, int]] = []
    start = -1
    for i, m in enumerate([*mask, 0]):
        if m and start < 0:
            start = i
        elif not m and start >= 0:
            runs.append((start, i - start))
            start = -1
    return runs


def step_ids_from_runs(mask: list[int], turn_tokens: list[int]) -> list[int]:
    """Step ids from the final mask runs: run j belongs to the j-th turn that appended tokens.

    ``turn_tokens[k]`` is the number of tokens assistant turn k appended (0 for an empty turn).
    Runs beyond the recorded turns (should not happen) get consecutive ids after the last turn.
    """
    producing = [k for k, n in enumerate(turn_tokens) if n > 0]
    out = [-1] * len(mask)
    for j, (start, length) in enumerate(mask_runs(mask)):
        step = producing[j] if j < len(producing) else len(turn_tokens) + j - len(producing)
        out[start : start + length] = [step] * length
    return out


def consistent(step_ids: list[int], mask: list[int]) -> bool:
    """Same length, and a token has a step exactly when its mask is 1."""
    return len(step_ids) == len(mask) and all(
        (s >= 0) == bool(m) for s, m in zip(step_ids, mask, strict=True)
    )


@dataclass
class TrajectoryTrace:
    """Step ids and tool outcomes of one trajectory (one agent-loop ``run``)."""

    committed: list[int] = field(default_factory=list)
    turn_tokens: list[int] = field(default_factory=list)
    calls: list[ToolCallRecord] = field(default_factory=list)
    current_step: int = -1
    diverged: bool = False
    last_merge_assistant: bool = False  # the last merge verl computed appended an assistant turn
    empty_turns: int = 0  # assistant turns that came back without tokens (aborted requests)
    closed_turns: int = 0  # turns cut without their end token, closed by an inserted one
    logprob_placeholders: int = 0  # assistant tokens whose rollout log-prob is a 0.0 placeholder
    _staged_mask: list[int] | None = None
    _staged_steps: list[int] = field(default_factory=list)

    def stage(self, mask_in: list[int], merge_result: Any, mask_out: list[int], closed: int = 0) -> None:
        """Record a merge verl just computed from ``mask_in`` (returned as ``mask_out``).

        ``closed``: context tokens the loop appended to the runtime prefix before the merge (an end
        token closing a cut turn); they belong to no step and stand or fall with the merge.
        """
        self.commit_if(mask_in)
        if len(self.committed) != len(mask_in):
            self.diverged = True
        step = len(self.turn_tokens)
        self.last_merge_assistant = merge_result.kind == "assistant"
        if merge_result.kind == "assistant":
            self.turn_tokens.append(int(merge_result.appended_token_count))
        self._staged_steps = apply_merge([*self.committed, *([-1] * closed)], merge_result, step)
        self._staged_mask = mask_out
        if len(self._staged_steps) != len(mask_out):
            self.diverged = True

    def commit_if(self, current_mask: list[int]) -> None:
        """Commit the staged merge if verl kept its mask list (identity), else discard it."""
        if self._staged_mask is not None and current_mask is self._staged_mask:
            self.committed = self._staged_steps
        self._staged_mask, self._staged_steps = None, []

    def record(
        self,
        name: str,
        outcome: str,
        format_error: bool = False,
        detail: str = "",
        queue_s: float = 0.0,
        active_s: float = 0.0,
        fault: str = FAULT_NONE,
    ) -> None:
        self.calls.append(
            ToolCallRecord(
                self.current_step, name, outcome, format_error, detail[:200], queue_s, active_s, str(fault)
            )
        )

    def step_faults(self, num_steps: int) -> list[str]:
        """Fault label of each step: its first call's label other than ``none``, else ``none``."""
        out = [FAULT_NONE] * num_steps
        for call in self.calls:
            if 0 <= call.step < num_steps and out[call.step] == FAULT_NONE:
                out[call.step] = call.fault
        return out

    def step_outcomes(self, num_steps: int) -> list[str]:
        """Outcome of each step's tool call(s): the most severe one, ``none`` without a call."""
        out = [OUTCOME_NONE] * num_steps
        for call in self.calls:
            if 0 <= call.step < num_steps and _SEVERITY[call.outcome] > _SEVERITY[out[call.step]]:
                out[call.step] = call.outcome
        return out

    def recovered(self) -> bool:
        """A failed call followed (later in the trajectory) by a successful one."""
        seen_failure = False
        for call in self.calls:
            if call.failed:
                seen_failure = True
            elif seen_failure and call.outcome == OUTCOME_OK:
                return True
        return False

    def stats(self) -> dict[str, int]:
        """The per-trajectory counters, in :data:`TOOL_STATS_FIELDS` order."""
        return {
            "tool_calls": len(self.calls),
            "tool_errors": sum(c.outcome == OUTCOME_ERROR for c in self.calls),
            "tool_timeouts": sum(c.outcome == OUTCOME_TIMEOUT for c in self.calls),
            "tool_format_errors": sum(c.format_error for c in self.calls),
            "recovered": int(self.recovered()),
        }
