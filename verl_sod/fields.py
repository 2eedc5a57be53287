"""The one schema of verl_sod: batch field names, outcome codes, counter names, record and status names.

The ``sod_tool_agent`` loop (``verl_sod.agent``) writes the batch fields; the ``sod`` loss and the tool
metrics (``verl_sod.algos``) read them in the actor's micro-batch; the per-step records
(``verl_sod.diagnostics``), the report (``verl_sod.report``), the evaluation (``verl_sod.eval``), the
sandbox and the rewards name the same things. Every such name is defined here, once. This module
imports nothing, so any layer may import it and no two layers need to import each other.
"""

from __future__ import annotations

# --- per-trajectory tensor fields of verl's trainer batch ---------------------------------------
#: per response token: index of the assistant step it belongs to, -1 for tool/observation tokens
STEP_IDS_KEY = "sod_step_ids"
#: per assistant step: outcome code of the tool call that step made (:data:`OUTCOME_CODES`)
STEP_OUTCOMES_KEY = "sod_step_outcomes"
#: per trajectory: the counters of :data:`TOOL_STATS_FIELDS`, in that order
TOOL_STATS_KEY = "sod_tool_stats"
#: the three fields above, as the agent loop adds them to ``AgentLoopOutput``
AGENT_BATCH_KEYS: tuple[str, ...] = (STEP_IDS_KEY, STEP_OUTCOMES_KEY, TOOL_STATS_KEY)
#: per trajectory: the step weights w_k of a batch-level ``sod_weighting`` (one float per step slot,
#: at least one entry), computed once per training step over the whole batch by the ``sod_sync``
#: trainer before verl splits the batch into micro-batches; the ``sod`` loss applies them as they are
STEP_WEIGHTS_KEY = "sod_step_weights"
#: key of the human-readable agent record in ``AgentLoopOutput.extra_fields`` (and reward extra_info)
AGENT_EXTRA_KEY = "sod_agent"

# --- tool-call outcomes of one assistant step -----------------------------------------------------
OUTCOME_NONE, OUTCOME_OK, OUTCOME_ERROR, OUTCOME_TIMEOUT = "none", "ok", "error", "timeout"
#: outcome name -> integer code in the ``sod_step_outcomes`` field (also its severity order)
OUTCOME_CODES: dict[str, int] = {OUTCOME_NONE: 0, OUTCOME_OK: 1, OUTCOME_ERROR: 2, OUTCOME_TIMEOUT: 3}
OUTCOME_NAMES: dict[int, str] = {code: name for name, code in OUTCOME_CODES.items()}
OUTCOMES: tuple[str, ...] = tuple(OUTCOME_CODES)
#: outcomes that count as a failed tool call
FAILED_OUTCOMES: tuple[str, ...] = (OUTCOME_ERROR, OUTCOME_TIMEOUT)
FAILED_OUTCOME_CODES: tuple[int, ...] = tuple(OUTCOME_CODES[o] for o in FAILED_OUTCOMES)

# --- step types (verl_sod.algos.step_types), from the per-step outcomes ----------------------------
#: a step's type, by precedence: ``failed_call`` (its call failed), ``recovery`` (an ``ok`` call whose
#: previous call-making step failed), ``after_failure`` (any other step right after a failed one),
#: ``normal`` (everything else)
STEP_NORMAL, STEP_FAILED_CALL, STEP_AFTER_FAILURE, STEP_RECOVERY = 0, 1, 2, 3
STEP_TYPE_NAMES: dict[int, str] = {
    STEP_NORMAL: "normal",
    STEP_FAILED_CALL: "failed_call",
    STEP_AFTER_FAILURE: "after_failure",
    STEP_RECOVERY: "recovery",
}
STEP_TYPES: tuple[str, ...] = tuple(STEP_TYPE_NAMES.values())

# --- fault labels a tool may report -------------------------------------------------------------
#: tool metrics key (dict returned by a verl ``BaseTool.execute``) naming the call's fault label
TOOL_FAULT_KEY = "fault"
#: fault label of a call without any fault (also what a step without a labelled call gets)
FAULT_NONE = "none"
#: key of the agent record (``extra_fields[AGENT_EXTRA_KEY]``) listing each step's fault label
STEP_FAULTS_KEY = "step_faults"
#: verl's key of the reward function's extra info inside a trajectory's ``extra_fields``
REWARD_EXTRA_INFO_KEY = "reward_extra_info"
#: TransferQueue field holding each trajectory's ``extra_fields`` dict
TRAJECTORY_EXTRA_FIELD = "extra_fields"

# --- per-trajectory tool counters -----------------------------------------------------------------
#: order of the counters in the ``sod_tool_stats`` field and keys of the agent record
TOOL_STATS_FIELDS: tuple[str, ...] = (
    "tool_calls",
    "tool_errors",
    "tool_timeouts",
    "tool_format_errors",
    "recovered",
)

# --- trajectory patterns (verl_sod.algos.patterns) ------------------------------------------------
PATTERN_EMPTY, PATTERN_STABLE, PATTERN_ERRONEOUS, PATTERN_RECOVERY = -1, 0, 1, 2
#: pattern code -> name; ``empty`` rows (no step) are left out of the pattern shares
PATTERN_NAMES: dict[int, str] = {
    PATTERN_STABLE: "stable",
    PATTERN_ERRONEOUS: "erroneous",
    PATTERN_RECOVERY: "recovery",
}
PATTERNS: tuple[str, ...] = (*PATTERN_NAMES.values(), "empty")

# --- per-step records on disk (verl_sod.diagnostics -> verl_sod.report) ---------------------------
#: ``<run dir>/sod_steps/step_NNNNNN.jsonl``
RECORDS_SUBDIR = "sod_steps"

# --- results of running code (verl_sod.sandbox, verl_sod.rewards) --------------------------------
#: status of one sandboxed program run
SANDBOX_STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "sandbox_error")
