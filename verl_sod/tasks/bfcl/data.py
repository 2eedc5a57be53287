"""BFCL multi-turn tasks as verl RL rows (``python -m verl_sod.data prepare bfcl-multi-turn``).

A task is BFCL's question entry (``BFCL_v4_multi_turn_<category>.json``) merged with its ground
truth (``possible_answer/``) and its category. :func:`task_row` turns it into one verl row:

* ``prompt``: the first user turn; ``agent_name``: ``sod_bfcl_agent`` (:mod:`.agent`);
* ``data_source``: ``bfcl/multi_turn/<category>``;
* ``extra_info``: ``id``, ``category``, ``split``, ``index``, ``involved_classes`` and JSON strings
  ``initial_config``, ``tools`` (the functions offered from the start, OpenAI function schemas as
  Qwen3's chat template renders them), ``later_turns`` (the user messages of turns 1.., one list
  per turn), ``held_out`` (miss_func: turn index -> schemas of the functions given in that turn),
  ``excluded_function`` (kept for reference; BFCL offers them too);
* ``reward_model.ground_truth``: a JSON string with ``id``, ``involved_classes``,
  ``initial_config``, ``long_context``, ``turns`` (BFCL's ground-truth call strings per turn) and
  ``later_user_texts`` (to split a decoded response into turns when re-scoring offline).

JSON strings keep one parquet type whatever the classes' state looks like.

BFCL is a test set. ``--split all`` (default) writes all tasks of the chosen categories;
``--split train`` only tasks whose number is a multiple of :data:`TRAIN_EVERY` (the same scenario
has the same number in every category, so the split is by number) and ``--split heldout`` the
others: train on ``train`` and report on ``heldout``, never on ``all``, after training on BFCL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from verl_sod.tasks.bfcl import package

AGENT_NAME = "sod_bfcl_agent"
DATA_SOURCE = "bfcl/multi_turn"
TRAIN_EVERY = 5
SPLITS = ("all", "train", "heldout")
#: BFCL's user message of a miss_func turn that adds functions (its ..._ADDITIONAL_FUNCTION_FC)
ADDED_FUNCTIONS_PROMPT = "I have updated some more functions you can choose from. What about now?"
_TYPES = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "any": "string",
}


def task_number(task_id: str) -> int:
    return int(str(task_id).rsplit("_", 1)[1])


def in_split(task_id: str, split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"--split for bfcl-multi-turn must be one of {', '.join(SPLITS)}, got {split!r}")
    train = task_number(task_id) % TRAIN_EVERY == 0
    return split == "all" or (split == "train") == train


def _json_schema(node: Any) -> Any:
    """A BFCL parameter description with JSON-Schema type names, recursively."""
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            if value not in _TYPES:
                raise ValueError(f"unknown BFCL parameter type {value!r}")
            out[key] = _TYPES[value]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _json_schema(prop) for name, prop in value.items()}
        else:
            out[key] = _json_schema(value)
    return out


def tool_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """One BFCL function doc as an OpenAI function tool (its ``response`` description is dropped)."""
    parameters = _json_schema(doc.get("parameters") or {"type": "dict", "properties": {}})
    return {
        "type": "function",
        "function": {
            "name": doc["name"],
            "description": doc.get("description", ""),
            "parameters": parameters,
        },
    }


def function_docs(classes: list[str]) -> list[dict[str, Any]]:
    return [doc for name in classes for doc in package.function_docs(name)]


def load_tasks(categories: list[str]) -> Iterator[dict[str, Any]]:
    """Question entries merged with their ground truth, category by category, in file order."""
    for category in categories:
        if category not in package.CATEGORIES:
            raise ValueError(
                f"unknown BFCL multi-turn category {category!r}; choose from {', '.join(package.CATEGORIES)}"
            )
        with package.answer_file(category).open(encoding="utf-8") as handle:
            answers = {row["id"]: row["ground_truth"] for row in map(json.loads, handle)}
        with package.question_file(category).open(encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                if entry["id"] not in answers:
                    raise ValueError(f"{entry['id']} has no ground truth in {package.answer_file(category)}")
                yield {**entry, "category": category, "ground_truth": answers[entry["id"]]}


def _offered_and_held_out(task: dict[str, Any], path_only: bool) -> tuple[list[dict], dict[str, list[dict]]]:
    docs = function_docs(list(task["involved_classes"]))
    missed = {str(turn): list(names) for turn, names in (task.get("missed_function") or {}).items()}
    held_names = {name for names in missed.values() for name in names}
    if path_only:  # tiny CPU models: only the functions on the task's ground-truth path
        keep = held_names | {str(p).rsplit(".", 1)[-1] for p in task.get("path") or []}
        docs = [doc for doc in docs if doc["name"] in keep]
    by_name = {doc["name"]: doc for doc in docs}
    unknown = sorted(held_names - set(by_name))
    if unknown:
        raise ValueError(f"missed_function names no documented function: {unknown}")
    offered = [tool_schema(doc) for doc in docs if doc["name"] not in held_names]
    held_out = {turn: [tool_schema(by_name[n]) for n in names] for turn, names in missed.items()}
    return offered, held_out


def later_turns(task: dict[str, Any]) -> list[list[dict[str, str]]]:
    """User messages of turns 1..n-1; a miss_func turn without a message gets BFCL's prompt."""
    missed = {str(t) for t in (task.get("missed_function") or {})}
    out = []
    for turn, messages in enumerate(task["question"][1:], start=1):
        if str(turn) in missed:
            if messages:
                raise ValueError(f"turn {turn} adds functions but also has a user message")
            messages = [{"role": "user", "content": ADDED_FUNCTIONS_PROMPT}]
        if not messages:
            raise ValueError(f"turn {turn} has no user message")
        out.append([{"role": str(m["role"]), "content": str(m["content"])} for m in messages])
    return out


def ground_truth(task: dict[str, Any]) -> dict[str, Any]:
    """The reward's ground truth: what the checker needs to rebuild and run the task."""
    turns = task["ground_truth"]
    if len(turns) != len(task["question"]):
        raise ValueError(f"{len(turns)} ground-truth turns for {len(task['question'])} user turns")
    return {
        "id": task["id"],
        "involved_classes": list(task["involved_classes"]),
        "initial_config": task["initial_config"],
        "long_context": "long_context" in task["category"],
        "turns": [list(calls) for calls in turns],
        "later_user_texts": [messages[-1]["content"] for messages in later_turns(task)],
    }


def task_row(
    task: dict[str, Any], index: int, split: str, data_source: str | None = None, path_only: bool = False
) -> dict[str, Any]:
    """One verl RL row (layout in the module docstring). ``path_only`` offers only the functions on
    the ground-truth path (short prompts for the tiny CPU models; not the benchmark)."""
    if not task["question"] or not task["question"][0]:
        raise ValueError("the first turn has no user message")
    offered, held_out = _offered_and_held_out(task, path_only)
    prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in task["question"][0]]
    truth = ground_truth(task)
    return {
        "data_source": data_source or f"{DATA_SOURCE}/{task['category']}",
        "agent_name": AGENT_NAME,
        "prompt": prompt,
        "ability": "tool_use",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
        "extra_info": {
            "index": index,
            "split": split,
            "id": task["id"],
            "category": task["category"],
            "involved_classes": list(task["involved_classes"]),
            "initial_config": json.dumps(task["initial_config"]),
            "long_context": truth["long_context"],
            "tools": json.dumps(offered),
            "later_turns": json.dumps(later_turns(task)),
            "held_out": json.dumps(held_out),
            "excluded_function": json.dumps(list(task.get("excluded_function") or [])),
        },
    }
