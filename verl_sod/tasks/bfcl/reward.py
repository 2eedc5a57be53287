"""The BFCL reward: BFCL's multi-turn check on the trajectory's recorded calls.

``compute_score`` has verl's custom-reward signature. The agent loop's record of executed calls
(``extra_fields["bfcl"]``) reaches it in ``extra_info`` (verl's reward manager merges the loop's
``extra_fields`` into it); the calls are replayed on fresh API instances next to the ground truth
and checked by :func:`.checker.check`. Without a record (a dump re-scored offline) the calls are
read back from the decoded response text (:func:`calls_from_text`).

Returned keys: ``score`` (1.0 when every turn passes, else 0.0; with ``partial_credit=True`` the
share of leading turns that passed), ``acc`` (always the all-turns verdict), ``turns_passed``,
``turns_completed`` (user turns the trajectory reached), ``num_user_turns``, ``force_quit``,
``api_errors`` (calls answered with an API error dict; -1 unknown) and ``bfcl_error`` (BFCL's
error type of the first failing turn, "" when valid). Enable partial credit in training with
``+reward.custom_reward_function.reward_kwargs.partial_credit=true``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from verl_sod.tasks.bfcl import checker
from verl_sod.tasks.bfcl.env import Call
from verl_sod.tasks.bfcl.episode import RECORD_KEY, turns_from_record


def calls_from_text(solution_str: str, later_user_texts: list[str]) -> list[list[list[Call]]]:
    """Per turn, the well-formed ``<tool_call>`` blocks of a decoded response, split at the later
    user turns' texts (found in order); each block is its own step. Offline fallback only."""
    segments, rest = [], solution_str
    for text in later_user_texts:
        head, sep, tail = rest.partition(text)
        if not sep:
            break
        segments.append(head)
        rest = tail
    segments.append(rest)
    return [[[call] for call in map(_block_call, _BLOCK.findall(segment)) if call] for segment in segments]


_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _block_call(body: str) -> Call | None:
    """A well-formed hermes block as a call, else None (it was never executed)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None
    args = payload.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return Call(payload["name"], args) if isinstance(args, dict) else None


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    partial_credit: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """BFCL's verdict for one trajectory (see the module docstring)."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    info = extra_info if isinstance(extra_info, Mapping) else {}
    record = info.get(RECORD_KEY)
    if isinstance(record, Mapping) and "calls" in record:
        turns = turns_from_record(record)
        force_quit, api_errors = bool(record.get("force_quit")), int(record.get("api_errors", -1))
    else:
        texts = list(truth.get("later_user_texts", []))
        turns, force_quit, api_errors = calls_from_text(solution_str or "", texts), False, -1
    result = checker.check(truth, turns)
    acc = 1.0 if result.valid else 0.0
    return {
        "score": result.partial if partial_credit else acc,
        "acc": acc,
        "turns_passed": float(result.turns_passed),
        "turns_completed": float(min(len(turns), result.num_turns)),
        "num_user_turns": float(result.num_turns),
        "force_quit": float(force_quit),
        "api_errors": float(api_errors),
        "bfcl_error": result.error_type,
    }
