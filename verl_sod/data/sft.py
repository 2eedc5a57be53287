"""Cold-start SFT rows: OpenAI-style or ShareGPT-style chats -> verl's multi-turn SFT parquet.

``python -m verl_sod.data prepare sft-cold-start --input PATH --output DIR`` writes rows with exactly
the two columns verl 0.9.1's ``MultiTurnSFTDataset`` reads (``messages_key: messages``,
``tools_key: tools``):

* ``messages``: a list of ``{"role", "content", "tool_calls"}``. ``role`` is system (first turn
  only), user, assistant or tool; ``content`` is a string; ``tool_calls`` is None except on an
  assistant turn that calls tools, where it is a list of OpenAI function calls
  ``{"type": "function", "function": {"name": str, "arguments": str}}``. ``arguments`` is a JSON
  object serialised with ``json.dumps(..., ensure_ascii=False)``: Qwen3's chat template prints a
  string verbatim and a dict through ``tojson``, which gives the same text, and a string keeps one
  parquet type whatever the argument names are.
* ``tools``: the list of OpenAI function schemas given to the chat template; the
  ``code_interpreter`` schema of :mod:`verl_sod.tools.code_interpreter` when the row has none.

Accepted input rows: ``messages`` (OpenAI chat, ``role``/``content``, optional ``tool_calls``) or
``conversations`` (ShareGPT ``from``/``value``: human -> user, gpt -> assistant,
tool/function/observation -> tool, system -> system); either may be a JSON string. Hermes-style
``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks in assistant text are converted to
structured ``tool_calls`` (Qwen3's template renders them back to the same hermes text), so tool turns
can be checked against the calls. A non-empty ``reasoning_content`` is put back in front of the
content as ``<think>...</think>``.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pyarrow as pa

from verl_sod.data.base import BadRowError, Options

# Same schema as verl_sod.tools.code_interpreter.DEFAULT_SCHEMA (a test checks they agree); copied
# so that data preparation does not import verl's tool stack.
CODE_INTERPRETER_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "code_interpreter",
        "description": "Run a Python 3 program and return what it prints (stdout and stderr).",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The complete Python program to run."}},
            "required": ["code"],
        },
    },
}

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}

TOOL_CALL_TYPE = pa.struct(
    [("type", pa.string()), ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))]
)
MESSAGE_TYPE = pa.struct(
    [("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(TOOL_CALL_TYPE))]
)
_HERMES = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def row_schema(row: dict[str, Any]) -> pa.Schema:
    """The output schema: ``messages`` fixed; ``tools`` typed from ``row`` (the first row written)."""
    tools_type = pa.Table.from_pylist([{"tools": row["tools"]}]).schema.field("tools").type
    return pa.schema([("messages", pa.list_(MESSAGE_TYPE)), ("tools", tools_type)])


def _plain(value: Any) -> Any:
    """Lists and dicts from a JSON string or from numpy arrays (parquet inputs)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadRowError(f"not valid JSON: {exc}") from None
    return _python(value)


def _python(value: Any, drop_none: bool = False) -> Any:
    """``value`` with numpy arrays as lists, recursively; ``drop_none`` leaves out None-valued keys
    (a parquet struct column pads the keys a row lacks with None)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _python(v, drop_none) for k, v in value.items() if not (drop_none and v is None)}
    if isinstance(value, list):
        return [_python(v, drop_none) for v in value]
    return value


def _raw_turns(row: dict[str, Any]) -> list[dict[str, Any]]:
    key = "messages" if row.get("messages") is not None else "conversations"
    if row.get(key) is None:
        raise BadRowError("row has no 'messages' or 'conversations'")
    try:
        turns = _plain(row[key])
    except BadRowError as exc:
        raise BadRowError(f"'{key}' is {exc}") from None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise BadRowError(f"'{key}' is not a list of chat turns")
    if not turns:
        raise BadRowError(f"'{key}' is empty")
    return turns


def _text(turn: dict[str, Any], index: int) -> str:
    content = turn.get("content", turn.get("value"))
    if content is None:
        return ""
    if isinstance(content, list):  # OpenAI content parts: text parts only
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        texts = [p for p in parts if isinstance(p, str)]
        if len(texts) != len(parts):
            raise BadRowError(f"content parts other than text are not supported (turn {index})")
        return "".join(texts)
    if not isinstance(content, str):
        raise BadRowError(f"content is {type(content).__name__}, not text (turn {index})")
    return content


def _arguments(value: Any, where: str) -> str:
    """Tool-call arguments as the JSON text of an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRowError(f"arguments are not JSON ({where})") from None
    value = _plain(value) if not isinstance(value, dict) else value
    if not isinstance(value, dict):
        raise BadRowError(f"arguments must be a JSON object, got {type(value).__name__} ({where})")
    return json.dumps(value, ensure_ascii=False)


def _call(name: Any, arguments: Any, where: str) -> dict[str, Any]:
    if not isinstance(name, str) or not name.strip():
        raise BadRowError(f"tool call has no function name ({where})")
    return {"type": "function", "function": {"name": name, "arguments": _arguments(arguments, where)}}


def _structured_calls(value: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` (``{"function": {...}}`` or flat ``{"name", "arguments"}``)."""
    try:
        calls = _plain(value)
    except BadRowError as exc:
        raise BadRowError(f"tool_calls is {exc} (turn {index})") from None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise BadRowError(f"tool_calls is not a list of calls (turn {index})")
    out = []
    for number, call in enumerate(calls):
        function = call.get("function", call)
        if not isinstance(function, dict):
            raise BadRowError(f"tool call {number} has no function (turn {index})")
        out.append(_call(function.get("name"), function.get("arguments", {}), f"turn {index}, call {number}"))
    return out


def _hermes_calls(content: str, index: int) -> tuple[str, list[dict[str, Any]]]:
    """Split ``<tool_call>`` blocks off assistant text: (text before them, calls)."""
    blocks = list(_HERMES.finditer(content))
    if not blocks:
        if "<tool_call>" in content or "</tool_call>" in content:
            raise BadRowError(f"unbalanced <tool_call> tags (turn {index})")
        return content, []
    between = [content[a.end() : b.start()] for a, b in itertools.pairwise(blocks)]
    if any(text.strip() for text in [*between, content[blocks[-1].end() :]]):
        raise BadRowError(f"text after a <tool_call> block (turn {index})")
    calls = []
    for number, block in enumerate(blocks):
        where = f"turn {index}, call {number}"
        try:
            payload = json.loads(block.group(1))
        except ValueError:
            raise BadRowError(f"<tool_call> body is not JSON ({where})") from None
        if not isinstance(payload, dict):
            raise BadRowError(f"<tool_call> body is not a JSON object ({where})")
        calls.append(_call(payload.get("name"), payload.get("arguments", {}), where))
    return content[: blocks[0].start()].rstrip(), calls


def _turn(raw: dict[str, Any], index: int) -> dict[str, Any]:
    """One normalised message."""
    name = raw.get("role", raw.get("from"))
    role = ROLES.get(str(name).strip().lower()) if name is not None else None
    if role is None:
        raise BadRowError(f"unknown role {name!r} (turn {index})")
    content, calls = _text(raw, index), None
    if role == "assistant":
        reasoning = raw.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning.strip():
            content = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"
        content, calls = _hermes_calls(content, index)
        if raw.get("tool_calls") is not None and len(raw["tool_calls"]) > 0:
            if calls:
                raise BadRowError(f"both tool_calls and <tool_call> text (turn {index})")
            calls = _structured_calls(raw["tool_calls"], index)
        calls = calls or None
        if not content.strip() and not calls:
            raise BadRowError(f"empty assistant turn (turn {index})")
    elif role in ("system", "user") and not content.strip():
        raise BadRowError(f"empty {role} turn (turn {index})")
    return {"role": role, "content": content, "tool_calls": calls}


def _check_order(messages: list[dict[str, Any]]) -> None:
    """system? user, then assistant turns each followed by its tool results or a new user turn."""
    pending = 0  # tool calls of the last assistant turn not yet answered
    previous: str | None = None
    for index, message in enumerate(messages):
        role = message["role"]
        _check_turn(role, previous, pending, index)
        if role == "tool":
            pending -= 1
        if role == "assistant":
            pending = len(message["tool_calls"] or [])
        previous = role
    if "user" not in {m["role"] for m in messages}:
        raise BadRowError("no user turn")
    if previous != "assistant" or pending:
        raise BadRowError("the last turn must be an assistant answer (not a tool call or other role)")


def _check_turn(role: str, previous: str | None, pending: int, index: int) -> None:
    """Raise if turn ``index`` (``role``) may not follow ``previous`` with ``pending`` results due."""
    if role == "system" and index != 0:
        raise BadRowError(f"system turn after the start (turn {index})")
    if role == "user":
        if previous not in (None, "system", "assistant"):
            raise BadRowError(f"user turn after a {previous} turn (turn {index})")
        if pending:
            raise BadRowError(f"user turn before all tool results arrived (turn {index})")
    if role == "assistant":
        if pending:
            raise BadRowError(f"assistant turn before all tool results arrived (turn {index})")
        if previous not in ("user", "tool"):
            raise BadRowError(f"assistant turn after {previous or 'nothing'} (turn {index})")
    if role == "tool" and pending == 0:
        raise BadRowError(f"tool turn without a preceding tool call (turn {index})")


def _tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    value = row.get("tools")
    if value is None or (isinstance(value, str) and not value.strip()):
        return [CODE_INTERPRETER_SCHEMA]
    try:
        tools = _plain(value)
    except BadRowError as exc:
        raise BadRowError(f"'tools' is {exc}") from None
    if not tools:
        return [CODE_INTERPRETER_SCHEMA]
    tools = _python(tools, drop_none=True)
    if not isinstance(tools, list):
        raise BadRowError("'tools' is not a list of function schemas")
    for number, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRowError(f"tool {number} is not an OpenAI function schema")
    return tools


def sft_cold_start(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """One chat (OpenAI ``messages`` or ShareGPT ``conversations``) -> ``{messages, tools}``."""
    messages = [_turn(turn, number) for number, turn in enumerate(_raw_turns(row))]
    _check_order(messages)
    tools = _tools(row)
    known = {tool["function"]["name"] for tool in tools}
    for number, message in enumerate(messages):
        for call in message["tool_calls"] or []:
            if call["function"]["name"] not in known:
                raise BadRowError(f"call to {call['function']['name']!r}, not in 'tools' (turn {number})")
    return {"messages": messages, "tools": tools}
