"""One BFCL trajectory's environment and bookkeeping, independent of verl.

:class:`Episode` is built from a prepared row's ``extra_info`` (:mod:`.data`). It owns the live
:class:`~.env.Environment` (fresh instances, the functions offered so far), the user turns still
to come, and the record the reward replays: per user turn, per assistant step, the calls that were
executed (name + JSON arguments). The agent loop (:mod:`.agent`) drives it; so can a test.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verl_sod.tasks.bfcl.env import Call, CallResult, Environment

#: BFCL's MAXIMUM_STEP_LIMIT: a turn with more steps that call functions force-quits the task
MAX_STEPS_PER_TURN = 20
RECORD_KEY = "bfcl"
_REQUIRED = ("involved_classes", "initial_config", "tools", "later_turns", "held_out")


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


@dataclass
class TaskSpec:
    """What the environment needs from a prepared row."""

    involved_classes: list[str]
    initial_config: dict[str, Any]
    long_context: bool
    tools: list[dict[str, Any]]
    later_turns: list[list[dict[str, str]]]
    held_out: dict[str, list[dict[str, Any]]]

    @classmethod
    def from_extra_info(cls, extra_info: Any) -> TaskSpec:
        info = extra_info if isinstance(extra_info, Mapping) else {}
        missing = [key for key in _REQUIRED if key not in info]
        if missing:
            raise ValueError(
                f"sod_bfcl_agent: extra_info lacks {missing}; prepare the data with "
                "`python -m verl_sod.data prepare bfcl-multi-turn --output DIR`"
            )
        return cls(
            involved_classes=[str(c) for c in _plain(info["involved_classes"])],
            initial_config=_loads(info["initial_config"]),
            long_context=bool(info.get("long_context", False)),
            tools=_loads(info["tools"]),
            later_turns=_loads(info["later_turns"]),
            held_out=_loads(info["held_out"]),
        )


def tool_names(schemas: list[dict[str, Any]]) -> list[str]:
    return [s["function"]["name"] for s in schemas]


@dataclass
class Episode:
    """The live environment plus the per-turn record of one trajectory."""

    spec: TaskSpec
    max_steps_per_turn: int = MAX_STEPS_PER_TURN
    env: Environment = field(init=False)
    turns: list[list[list[dict[str, Any]]]] = field(default_factory=lambda: [[]])
    steps_in_turn: int = 0
    force_quit: bool = False
    results: list[CallResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        spec = self.spec
        self.env = Environment(spec.involved_classes, spec.initial_config, spec.long_context)

    @property
    def num_turns(self) -> int:
        return 1 + len(self.spec.later_turns)

    @property
    def turn(self) -> int:
        """Index of the current user turn."""
        return len(self.turns) - 1

    def begin_step(self) -> None:
        self.turns[-1].append([])

    def execute(self, call: Call) -> CallResult:
        """Run a call in the current step; executed calls go into the record."""
        if not self.turns[-1]:
            self.begin_step()
        result = self.env.execute(call)
        if result.executed:
            self.turns[-1][-1].append(copy.deepcopy(call.as_dict()))
        self.results.append(result)
        return result

    def end_step(self) -> bool:
        """Close a step that called functions; True when the turn must force-quit (BFCL's limit)."""
        self.steps_in_turn += 1
        if self.steps_in_turn > self.max_steps_per_turn:
            self.force_quit = True
        return self.force_quit

    def next_user_turn(self) -> list[dict[str, Any]] | None:
        """The next turn's user messages (its added functions announced), or None when done.

        Nothing changes until :meth:`start_next_turn` (the loop calls it once the message fits).
        Functions withheld until that turn (miss_func) are announced: their schemas are put in
        front of the message, since the system prompt of a running conversation cannot change.
        """
        nxt = self.turn + 1
        if self.force_quit or nxt >= self.num_turns:
            return None
        messages = [dict(m) for m in self.spec.later_turns[nxt - 1]]
        added = self.spec.held_out.get(str(nxt), [])
        if added:
            listing = "\n".join(json.dumps(schema) for schema in added)
            messages[-1]["content"] = f"<tools>\n{listing}\n</tools>\n" + messages[-1]["content"]
        return messages

    def start_next_turn(self) -> None:
        """The next user turn has reached the model: record its calls from now on."""
        if self.turn + 1 >= self.num_turns:
            raise RuntimeError("no user turn left")
        self.turns.append([])
        self.steps_in_turn = 0

    def active_tools(self) -> list[dict[str, Any]]:
        added = [s for turn in range(1, self.turn + 1) for s in self.spec.held_out.get(str(turn), [])]
        return [*self.spec.tools, *added]

    def record(self) -> dict[str, Any]:
        """What the reward needs (``extra_fields["bfcl"]``): the calls as JSON, turns reached."""
        return {
            "calls": json.dumps([[step for step in turn if step] for turn in self.turns]),
            "turns_reached": len(self.turns),
            "num_turns": self.num_turns,
            "force_quit": self.force_quit,
            "api_errors": sum(r.outcome == "api_error" for r in self.results),
        }


def turns_from_record(record: Mapping[str, Any]) -> list[list[list[Call]]]:
    """The recorded calls back as :class:`Call` turns (the checker's input)."""
    raw = _loads(record["calls"])
    return [[[Call.from_dict(c) for c in step] for step in turn] for turn in raw]
