"""The BFCL environment: fresh simulated API instances, and calls executed without ``eval``.

:class:`Environment` holds one instance of each API class a task involves, loaded with the task's
initial state (BFCL's ``_load_scenario``; the long-context category loads its fillers). A call is a
function name plus a dict of keyword arguments. It is executed by *looking the name up* among the
public methods of the instances (later classes win a name clash, as in BFCL's executor), binding
the arguments to the method's signature and calling it. Nothing is parsed as Python code: model
calls arrive as hermes JSON; ground-truth call strings are parsed with :mod:`ast` and only literal
arguments are accepted (:func:`parse_call_string`).

Each call yields a :class:`CallResult`: the observation text, rendered exactly as BFCL's executor
renders results (strings as they are, dicts as JSON, everything else ``str()``, an exception as
``Error during execution: ...``; the checker compares these strings), and the outcome:

* ``ok``: the method returned normally;
* ``api_error``: it returned a dict with an ``error`` key (the simulated API refused);
* ``exception``: the method raised (the state may be partly changed);
* ``rejected``: not executed: an unknown function, or arguments that do not bind.

As in BFCL's executor, any public method of an involved class runs, also one whose function is not
(yet) offered in the prompt (miss_func): the offered list is a prompt matter. One BFCL ground truth
(``multi_turn_miss_func_49`` calls ``tail`` two turns before it is offered) depends on that.

Only ``ok``, ``api_error`` and ``exception`` calls were executed; :attr:`Environment.executed`
lists them, so a trajectory can be replayed exactly.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verl_sod.tasks.bfcl import package

OK, API_ERROR, EXCEPTION, REJECTED = "ok", "api_error", "exception", "rejected"
EXECUTED_OUTCOMES = (OK, API_ERROR, EXCEPTION)


@dataclass(frozen=True)
class Call:
    """One function call: a name and its keyword arguments (JSON-like values)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Call:
        return cls(str(data["name"]), dict(data.get("arguments") or {}))


@dataclass(frozen=True)
class CallResult:
    call: Call
    text: str
    outcome: str

    @property
    def executed(self) -> bool:
        return self.outcome in EXECUTED_OUTCOMES

    @property
    def failed(self) -> bool:
        return self.outcome != OK


def render_result(value: Any) -> str:
    """A method's return value as BFCL's executor renders it."""
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _literal(node: ast.AST, source: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"non-literal argument {ast.get_source_segment(source, node)!r} in {source!r}"
        ) from None


def parse_call_string(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``name(args..., key=value...)`` with literal arguments -> (name, positional, keyword)."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a call: {source!r} ({exc.msg})") from None
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {source!r}")
    args = [_literal(a, source) for a in node.args]
    kwargs = {kw.arg: _literal(kw.value, source) for kw in node.keywords if kw.arg is not None}
    if len(kwargs) != len(node.keywords):
        raise ValueError(f"**kwargs are not supported: {source!r}")
    return node.func.id, args, kwargs


class Environment:
    """Fresh instances of ``involved_classes`` loaded with ``initial_config``; see the module doc."""

    def __init__(
        self, involved_classes: Iterable[str], initial_config: dict[str, Any], long_context: bool = False
    ) -> None:
        stateless = set(package.backend_config().STATELESS_CLASSES)
        self.instances: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}
        for name in involved_classes:
            instance = package.api_class(name)()
            if name not in stateless:
                instance._load_scenario(
                    copy.deepcopy(initial_config.get(name, {})), long_context=long_context
                )
            self.instances[name] = instance
            for method_name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not method_name.startswith("_"):
                    self.methods[method_name] = method
        self.executed: list[Call] = []

    def execute(self, call: Call) -> CallResult:
        """Run one call against the instances (see the module doc for the outcomes)."""
        if call.name.startswith("_") or call.name not in self.methods:
            available = sorted(self.methods)
            text = f"Error: unknown function '{call.name}'. Available functions: {available}"
            return CallResult(call, text, REJECTED)
        method = self.methods[call.name]
        if not isinstance(call.arguments, dict):
            return CallResult(call, f"Error: the arguments of '{call.name}' must be a JSON object", REJECTED)
        try:
            inspect.signature(method).bind(**call.arguments)
        except TypeError as exc:
            return CallResult(call, f"Error: bad arguments for '{call.name}': {exc}", REJECTED)
        self.executed.append(call)
        try:  # a copy: the simulated APIs keep (and later mutate) argument lists in their state
            value = method(**copy.deepcopy(call.arguments))
        except Exception as exc:  # the simulated API's own bug or a bad value: an observation
            return CallResult(call, f"Error during execution: {exc}", EXCEPTION)
        outcome = API_ERROR if isinstance(value, dict) and "error" in value else OK
        return CallResult(call, render_result(value), outcome)

    def call_from_string(self, source: str) -> Call:
        """A ground-truth call string as a keyword :class:`Call` (positional args bound by name)."""
        name, args, kwargs = parse_call_string(source)
        if name not in self.methods:
            raise ValueError(f"ground-truth call {source!r} names no method of {sorted(self.instances)}")
        bound = inspect.signature(self.methods[name]).bind(*args, **kwargs)
        return Call(name, dict(bound.arguments))

    def execute_string(self, source: str) -> CallResult:
        """Execute a trusted ground-truth call string (parsed, never ``eval``'d)."""
        return self.execute(self.call_from_string(source))
