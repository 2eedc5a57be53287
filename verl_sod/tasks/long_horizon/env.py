"""The long-horizon calculator: problems, the seeded fault schedule and the stateful tool session.

A problem is a start value and H operations (``start 7: +5 *3 -2 ...``); solving it takes one
``calc(a, op, b)`` call per operation, each on the previous result, then ``\\boxed{answer}``.

:class:`CalcSession` is the tool's state for one trajectory. It remembers the last good result and
answers each call, in this order:

1. an **injected fault** scheduled for (problem, call index k, attempt): ``busy`` ->
   ``error: busy, retry``; ``timeout`` -> ``error: timeout`` (reported as a time-out outcome at
   once, nothing waits); both are visible and a plain retry of the same call succeeds (unless the
   retry is scheduled to fail too);
2. malformed arguments -> ``error: bad arguments`` (visible);
3. a left operand ``a`` that is not the last good result -> ``error: stale operand`` (visible; the
   agent can fix it by copying the last result);
4. an injected ``corrupt`` fault: the right operand is corrupted in transit, the tool computes
   with ``b + delta`` and returns that wrong number as an ordinary result. It is **silent**: the
   observation looks like success, the session takes the wrong value as its last good result, and
   every later step carries it (a silent cascade; the final answer is wrong). A mis-copied ``b``
   from the question fails the same silent way, without a fault label.

The call index k is the number of good results so far; the attempt counts every call made at k.
Faults are drawn from a hash of (problem id, k, attempt), so every method and run sees the same
schedule. The probe mode puts exactly one fault (``probe_kind``) at attempt 0 of call
``probe_call`` (-1: a call drawn uniformly from 0..H-1 by the problem id) and none elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from verl_sod.tasks.splits import draw_unique, stable_hash

OPS = ("+", "-", "*")
VALUE_RANGE = (-20, 99)
#: fault labels of a call (``none`` = the call was answered correctly)
FAULT_NONE, BUSY, TIMEOUT, CORRUPT, STALE, BAD_ARGS = (
    "none",
    "busy",
    "timeout",
    "corrupt",
    "stale_operand",
    "bad_args",
)
FAULT_CODES: dict[str, int] = {FAULT_NONE: 0, BUSY: 1, TIMEOUT: 2, CORRUPT: 3, STALE: 4, BAD_ARGS: 5}
INJECTED = (BUSY, TIMEOUT, CORRUPT)
#: labels whose call failed visibly (the agent sees an error and can retry)
VISIBLE = (BUSY, TIMEOUT, STALE, BAD_ARGS)
OBSERVATION = {
    BUSY: "error: busy, retry",
    TIMEOUT: "error: timeout",
    STALE: "error: stale operand",
    BAD_ARGS: "error: bad arguments",
}


def apply_op(value: int, op: str, x: int) -> int:
    return value + x if op == "+" else value - x if op == "-" else value * x


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def horizon(self) -> int:
        return len(self.ops)

    @property
    def question(self) -> str:
        return f"start {self.start}: " + " ".join(f"{op}{x}" for op, x in self.ops)

    @property
    def problem_id(self) -> int:
        """Seed of the fault schedule: a hash of the question (the same in every file and run)."""
        return stable_hash("faults:" + self.question)

    def intermediate(self) -> list[int]:
        values, value = [], self.start
        for op, x in self.ops:
            value = apply_op(value, op, x)
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.intermediate()[-1]


def _draw(rng: random.Random, horizon: int) -> Problem:
    value = rng.randint(1, 9)
    ops: list[tuple[str, int]] = []
    start = value
    while len(ops) < horizon:
        op, x = rng.choice(OPS), rng.randint(1, 9)
        nxt = apply_op(value, op, x)
        if VALUE_RANGE[0] <= nxt <= VALUE_RANGE[1] and not (op == "*" and x == 1):
            ops.append((op, x))
            value = nxt
    return Problem(start, tuple(ops))


def make_problems(
    n: int, seed: int, horizons: tuple[int, ...] = (8,), split: str | None = None
) -> list[Problem]:
    """``n`` distinct problems of ``split``, horizons cycling through ``horizons``."""
    if not horizons or min(horizons) < 1:
        raise ValueError(f"horizons must be positive integers, got {horizons!r}")
    counter = iter(range(10**9))
    return draw_unique(
        lambda rng: _draw(rng, horizons[next(counter) % len(horizons)]),
        lambda p: p.question,
        n,
        seed,
        split,
    )


def retry_budget(horizon: int) -> int:
    """R = 2 + H // 4 failed calls a trajectory may spend and still finish."""
    return 2 + horizon // 4


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection of one trajectory. ``probe_call`` set (>= 0, or -1 for a drawn call) selects
    the probe mode: one ``probe_kind`` fault there and no random faults."""

    p_flaky: float = 0.0
    p_timeout: float = 0.0
    p_corrupt: float = 0.0
    probe_call: int | None = None
    probe_kind: str = BUSY

    def __post_init__(self) -> None:
        rates = (self.p_flaky, self.p_timeout, self.p_corrupt)
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {rates}")
        if self.probe_kind not in INJECTED:
            raise ValueError(f"probe_kind must be one of {INJECTED}, got {self.probe_kind!r}")

    @property
    def mode(self) -> str:
        if self.probe_call is not None:
            return "probe"
        return "random" if self.p_flaky + self.p_timeout + self.p_corrupt > 0 else "none"

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def _uniform(*parts: object) -> float:
    return stable_hash(":".join(map(str, parts))) / 2**64


def probe_index(config: FaultConfig, problem_id: int, horizon: int) -> int | None:
    if config.probe_call is None:
        return None
    if config.probe_call >= 0:
        return min(config.probe_call, horizon - 1)
    return int(_uniform(problem_id, "probe") * horizon)


def scheduled_fault(config: FaultConfig, problem_id: int, horizon: int, k: int, attempt: int) -> str:
    """The injected fault of attempt ``attempt`` at call index ``k`` (``none`` if there is none)."""
    if config.mode == "probe":
        return (
            config.probe_kind if (k, attempt) == (probe_index(config, problem_id, horizon), 0) else FAULT_NONE
        )
    u = _uniform(problem_id, k, attempt)
    for kind, p in ((BUSY, config.p_flaky), (TIMEOUT, config.p_timeout), (CORRUPT, config.p_corrupt)):
        if u < p:
            return kind
        u -= p
    return FAULT_NONE


@dataclass
class CallResult:
    text: str
    fault: str  # a FAULT_CODES label
    status: str  # ok | error | timeout (sod_tool_agent's outcome vocabulary)
    k: int
    attempt: int
    result: int | None = None

    def record(self) -> dict[str, Any]:
        return {"k": self.k, "attempt": self.attempt, "fault": self.fault, "status": self.status}


@dataclass
class CalcSession:
    """The tool state of one trajectory (see the module docstring for the order of checks)."""

    start: int
    horizon: int
    problem_id: int
    faults: FaultConfig = field(default_factory=FaultConfig)
    last: int = 0
    k: int = 0
    attempt: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last = self.start

    def call(self, args: Any) -> CallResult:
        k, attempt = self.k, self.attempt
        fault = scheduled_fault(self.faults, self.problem_id, self.horizon, k, attempt)
        self.attempt += 1
        parsed = _parse(args)
        if fault in (BUSY, TIMEOUT):
            out = CallResult(
                OBSERVATION[fault], fault, "timeout" if fault == TIMEOUT else "error", k, attempt
            )
        elif parsed is None:
            out = CallResult(OBSERVATION[BAD_ARGS], BAD_ARGS, "error", k, attempt)
        elif parsed[0] != self.last:
            out = CallResult(OBSERVATION[STALE], STALE, "error", k, attempt)
        else:
            a, op, b = parsed
            if fault == CORRUPT:
                delta = 1 + int(_uniform(self.problem_id, k, "delta") * 3)
                b = b + delta if _uniform(self.problem_id, k, "sign") < 0.5 else b - delta
            value = apply_op(a, op, b)
            if abs(value) > 10**6:
                out = CallResult(OBSERVATION[BAD_ARGS], BAD_ARGS, "error", k, attempt)
            else:
                out = CallResult(str(value), fault, "ok", k, attempt, value)
                self.last, self.k, self.attempt = value, self.k + 1, 0
        self.calls.append(out.record())
        return out


def _parse(args: Any) -> tuple[int, str, int] | None:
    if not isinstance(args, dict) or set(args) != {"a", "op", "b"}:
        return None
    a, op, b = args["a"], args["op"], args["b"]
    if type(a) is not int or type(b) is not int or op not in OPS or max(abs(a), abs(b)) > 10**6:
        return None
    return a, op, b


def _longest_failed_run(calls: list[dict[str, Any]]) -> int:
    """The longest run of consecutive visibly failed calls, in call order."""
    best = run = 0
    for c in calls:
        run = run + 1 if c["fault"] in VISIBLE else 0
        best = max(best, run)
    return best


def summarize(calls: list[dict[str, Any]], horizon: int) -> dict[str, int]:
    """Per-trajectory fault counters from a session's call records (numeric, for reward extra info)."""
    faults = [c for c in calls if c["fault"] != FAULT_NONE]
    visible = [c for c in calls if c["fault"] in VISIBLE]
    ok_at = {c["k"] for c in calls if c["status"] == "ok"}
    out = {
        "tool_calls": len(calls),
        "good_calls": len(ok_at),
        "faults": len(faults),
        "failed_calls": len(visible),
        "injected_faults": sum(c["fault"] in INJECTED for c in calls),
        "recovered_faults": sum(c["k"] in ok_at for c in visible),
        "first_fault_call": faults[0]["k"] if faults else -1,
        "first_fault_kind": FAULT_CODES[faults[0]["fault"]] if faults else 0,
        "completed": int(len(ok_at) >= horizon),
        # 1 when the trajectory had a visible failure and every failed call index later got a good
        # result; 0 otherwise (also without any visible failure: read it together with failed_calls)
        "recovered": int(bool(visible) and all(c["k"] in ok_at for c in visible)),
        "cascade_length": _longest_failed_run(calls),
    }
    out.update(
        {label: sum(c["fault"] == label for c in calls) for label in FAULT_CODES if label != FAULT_NONE}
    )
    return out
