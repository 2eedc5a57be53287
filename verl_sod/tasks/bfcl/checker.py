"""BFCL's multi-turn check, run on a recorded trajectory without evaluating any model text.

BFCL's ``multi_turn_checker`` re-executes the model's calls by ``eval``-ing call strings. Here the
same check is driven from the trajectory's *recorded calls* (name + JSON arguments, exactly the
calls the environment executed), replayed on fresh instances by :class:`~.env.Environment`, and
the ground truth is executed the same way from its parsed call strings. The comparison itself is
BFCL's: per turn, in order,

1. a turn whose ground truth has calls fails when the model made no call in it;
2. a turn whose ground truth is empty is not checked (the model's calls still run, so later state
   checks see them);
3. ``state_checker``: every public attribute of every instance equals the ground truth's;
4. ``response_checker``: the ground truth's results of this turn are contained (unordered, with
   multiplicity) in the model's results of all turns so far.

The first failing turn ends the check, as in BFCL. A trajectory that did not reach every turn
(force-quit after too many steps in a turn, or the response budget ran out) fails, as BFCL fails a
force-terminated entry; the turns it did reach are still checked for the partial credit. (As in
BFCL, a trajectory cut short *in* its last turn is checked normally.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verl_sod.tasks.bfcl import package
from verl_sod.tasks.bfcl.env import Call, Environment

#: the model's calls: per user turn, per assistant step (only steps with calls), the calls
Turns = list[list[list[Call]]]


@dataclass
class CheckResult:
    """Outcome of one trajectory: ``valid`` (BFCL's verdict) and the leading turns that passed."""

    valid: bool
    turns_passed: int
    num_turns: int
    error_type: str = ""
    error_message: str = ""

    @property
    def partial(self) -> float:
        """Share of turns passed before the first failure (the optional partial credit)."""
        return self.turns_passed / self.num_turns if self.num_turns else 0.0


def _environment(truth: dict[str, Any]) -> Environment:
    return Environment(truth["involved_classes"], truth["initial_config"], bool(truth.get("long_context")))


def check(truth: dict[str, Any], model_turns: Turns) -> CheckResult:
    """BFCL's verdict for ``model_turns`` against ``truth`` (the row's ground-truth dict)."""
    bfcl = package.checker()
    gt_turns: list[list[str]] = truth["turns"]
    n = len(gt_turns)
    model_env, gt_env = _environment(truth), _environment(truth)
    all_model_results: list[str] = []
    for t, gt_calls in enumerate(gt_turns):
        if t >= len(model_turns):
            return CheckResult(
                False, t, n, "multi_turn:force_terminated", f"the trajectory ended in turn {t}"
            )
        steps = [step for step in model_turns[t] if step]
        for step in steps:
            all_model_results.extend(model_env.execute(call).text for call in step)
        gt_results = [gt_env.execute_string(call).text for call in gt_calls]
        if not gt_calls:
            continue
        if not steps:
            return CheckResult(False, t, n, "multi_turn:empty_turn_model_response", f"no call in turn {t}")
        state = bfcl.state_checker(model_env.instances, gt_env.instances)
        if not state["valid"]:
            return CheckResult(False, t, n, state["error_type"], state["error_message"])
        response = bfcl.response_checker(all_model_results, gt_results, t)
        if not response["valid"]:
            return CheckResult(False, t, n, response["error_type"], response["error_message"])
    if len(model_turns) > n:
        return CheckResult(
            False, n, n, "multi_turn:extra_turns", f"{len(model_turns)} turns recorded, {n} expected"
        )
    return CheckResult(True, n, n)


def ground_truth_turns(truth: dict[str, Any]) -> Turns:
    """The ground truth as model turns (one step per turn), for replays and SFT data."""
    env = _environment(truth)
    return [[[env.call_from_string(s) for s in calls]] if calls else [] for calls in truth["turns"]]
