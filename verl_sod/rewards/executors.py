"""Where model-written code runs: an executor object, never the reward process itself.

An executor has one method, ``run_sync(code, stdin, timeout_s)``, returning an object with
``status`` ("ok" | "error" | "timeout" | "sandbox_error"), ``stdout``, ``stderr``, ``exit_code`` and
``duration_s``. The default is :class:`verl_sod.sandbox.Sandbox`, configured from (first match wins)
the reward function's ``sandbox`` keyword (a dict of ``SandboxConfig`` fields, e.g. from verl's
``reward.custom_reward_function.reward_kwargs``), ``extra_info["sandbox"]``, and the environment
variable ``VERL_SOD_SANDBOX_BACKEND`` (``local`` or ``sandbox_fusion``; the SandboxFusion address is
``fusion_url`` or ``$VERL_SOD_SANDBOX_FUSION_URL``, read by the sandbox package itself). No address
or backend is built in here. ``verl_sod.sandbox`` is imported only when code is graded.

``run_sync`` is called from a helper thread, and a call that outlives the reward's deadline (see
:func:`verl_sod.rewards.code.reward_deadline_s`) is abandoned, not interrupted: an executor must
bound its own calls (the sandbox's backends do) and be safe to call from several threads.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

ENV_FIELDS = {"VERL_SOD_SANDBOX_BACKEND": "backend"}


class ExecResult(Protocol):
    """What one execution reports (read-only, so frozen dataclasses and narrower types conform)."""

    @property
    def status(self) -> str: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def duration_s(self) -> float: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a Python program with the given stdin under a wall-clock limit."""

    def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> ExecResult: ...


def sandbox_settings(kwargs: Mapping[str, Any], extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``SandboxConfig`` fields for this call: keyword, then extra_info, then environment."""
    for source in (kwargs.get("sandbox"), (extra_info or {}).get("sandbox")):
        if isinstance(source, Mapping) and source:
            return dict(source)
        if isinstance(source, str) and source.strip():
            return dict(json.loads(source))
    return {field: os.environ[var] for var, field in ENV_FIELDS.items() if os.environ.get(var)}


_SANDBOXES: dict[str, Executor] = {}
_SANDBOX_LOCK = threading.Lock()


def default_executor(settings: Mapping[str, Any]) -> Executor:
    """A :class:`verl_sod.sandbox.Sandbox` for ``settings``, built once per distinct setting."""
    key = json.dumps(dict(settings), sort_keys=True, default=str)
    with _SANDBOX_LOCK:
        if key not in _SANDBOXES:
            try:
                from verl_sod.sandbox import Sandbox, SandboxConfig
            except ImportError as exc:
                raise RuntimeError(
                    "code rewards need an executor: pass executor=..., or install/configure "
                    f"verl_sod.sandbox (import failed: {exc})"
                ) from exc
            build = getattr(SandboxConfig, "from_dict", None)
            config = build(dict(settings)) if build is not None else SandboxConfig(**settings)
            _SANDBOXES[key] = Sandbox(config)
        return _SANDBOXES[key]


def resolve_executor(kwargs: Mapping[str, Any], extra_info: Mapping[str, Any] | None) -> Executor:
    """The ``executor`` keyword if given (an object with ``run_sync``), else the default sandbox."""
    executor = kwargs.get("executor")
    if executor is not None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must have a run_sync(code, stdin, timeout_s) method, got {executor!r}")
        return executor
    return default_executor(sandbox_settings(kwargs, extra_info))
