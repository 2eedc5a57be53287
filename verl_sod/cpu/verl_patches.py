"""The verl internals replaced on the CPU path, all here, applied only when ``VERL_PLATFORM=cpu``.

verl 0.9.1 has no registry for these, so they are wrapped in place. Each wrapper checks what it
expects to find, and ``tests/test_cpu_platform_on_cpu.py`` fails loudly if verl changes under it.

1. ``verl.workers.engine_workers.initialize_global_process_group_ray`` builds the backend string
   ``"cpu:gloo,{device}:{backend}"``, which is ``"cpu:gloo,cpu:gloo"`` on CPU: torch rejects the
   duplicate device. The wrapper passes plain ``"gloo"`` when no backend is given.
2. ``verl.utils.distributed.initialize_global_process_group`` (torchrun entry points such as verl's
   SFT trainer, ``python -m verl.trainer.sft_trainer``) hard-codes the same string and takes no
   backend; the replacement initialises the default group with ``"gloo"`` and returns
   ``(local_rank, rank, world_size)`` as verl's does. Callers import it at call time, so the module
   attribute is what they get.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from typing import Any

from verl_sod.cpu.platform import cpu_platform_selected

PATCHED_MARK = "_verl_sod_cpu_patch"


def _gloo_process_group(original: Any) -> Any:
    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second: Any = None, backend: str | None = None) -> Any:
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(initialize_global_process_group_ray, PATCHED_MARK, True)
    return initialize_global_process_group_ray


def _gloo_global_process_group(original: Any) -> Any:
    @functools.wraps(original)
    def initialize_global_process_group(timeout_second: int = 36000) -> tuple[int, int, int]:
        import torch.distributed

        torch.distributed.init_process_group(
            backend="gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    setattr(initialize_global_process_group, PATCHED_MARK, True)
    return initialize_global_process_group


def apply_cpu_patches(force: bool = False) -> list[str]:
    """Apply every CPU patch once; return the names patched (empty unless on the CPU platform)."""
    if not (force or cpu_platform_selected()):
        return []
    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers

    target = engine_workers.initialize_global_process_group_ray
    if not getattr(target, PATCHED_MARK, False):
        engine_workers.initialize_global_process_group_ray = _gloo_process_group(target)
    if not getattr(distributed.initialize_global_process_group, PATCHED_MARK, False):
        distributed.initialize_global_process_group = _gloo_global_process_group(
            distributed.initialize_global_process_group
        )
    return [
        "verl.workers.engine_workers.initialize_global_process_group_ray",
        "verl.utils.distributed.initialize_global_process_group",
    ]
