"""Sandboxed execution of model-written Python code.

>>> from verl_sod.sandbox import Sandbox, SandboxConfig
>>> result = Sandbox(SandboxConfig(timeout_s=5)).run_sync("print(6 * 7)")
>>> result.status, result.stdout
('ok', '42\\n')

Backends: ``local`` (bubblewrap after dropping to a per-slot uid, with a warned fallback chain;
see :mod:`verl_sod.sandbox.isolation` and :mod:`verl_sod.sandbox.levels`) and ``sandbox_fusion``
(HTTP client of a SandboxFusion server). ``python -m verl_sod.sandbox run FILE`` and
``python -m verl_sod.sandbox doctor`` are the command line. Details and measured costs: ``docs/sandbox.md``.
"""

from verl_sod.sandbox.api import Sandbox
from verl_sod.sandbox.config import ISOLATION_LEVELS, SandboxConfig
from verl_sod.sandbox.isolation import SandboxUnavailableError
from verl_sod.sandbox.result import STATUSES, SandboxResult

__all__ = [
    "ISOLATION_LEVELS",
    "STATUSES",
    "Sandbox",
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailableError",
]
