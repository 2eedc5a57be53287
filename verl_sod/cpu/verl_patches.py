"""The verl internals replaced on the CPU path, all here, applied only when ``VERL_PLATFORM=cpu``.

verl 0.9.1 has no registry for these, so they are wrapped in place. Each wrapper checks what it
expects to find, and ``tests/test_cpu_platform_on_cpu.py`` fails loudly if verl changes under it.

1. ``verl.workers.engine_workers.initialize_global_process_group_ray`` builds the backend string
   ``"cpu:gloo,{device}:{backend}"``, which is ``"cpu:gloo,cpu:gloo"`` on CPU: torch rejects the
   duplicate device. The wrapper passes plain ``"gloo"`` when no backend is given.
"""

from __future__ import annotations

import functools
from typing import Any

from verl_sod.cpu.platform import cpu_platform_selected

PATCHED_MARK = "_verl_sod_cpu_patch"


def _gloo_process_group(original: Any) -> Any:
    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second: Any = None, backend: str | None = None) -> Any:
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(initialize_global_process_group_ray, PATCHED_MARK, True)
    return initialize_global_process_group_ray


def apply_cpu_patches(force: bool = False) -> list[str]:
    """Apply every CPU patch once; return the names patched (empty unless on the CPU platform)."""
    if not (force or cpu_platform_selected()):
        return []
    import verl.workers.engine_workers as engine_workers

    target = engine_workers.initialize_global_process_group_ray
    if not getattr(target, PATCHED_MARK, False):
        engine_workers.initialize_global_process_group_ray = _gloo_process_group(target)
    return ["verl.workers.engine_workers.initialize_global_process_group_ray"]
