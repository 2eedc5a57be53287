"""A ``cpu`` platform for verl's ``PlatformRegistry``: run verl's real trainer with no accelerator.

Selected only by ``VERL_PLATFORM=cpu`` (verl's own switch); registering it changes nothing
otherwise, because verl's auto-detection probes platforms with ``is_platform_available`` and this one
answers False there. Ray still schedules "GPU" bundles, so the CPU recipes give Ray logical GPUs
(``ray_kwargs.ray_init.num_gpus``); each one is a CPU process here.

``torch.cpu`` lacks several calls verl makes on its device module (memory statistics, device
names, RNG state); :class:`CPUDeviceModule` answers them with harmless stand-ins.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

PLATFORM_NAME = "cpu"


def cpu_platform_selected() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _none(*_args: Any, **_kwargs: Any) -> None:
    return None


class CPUDeviceModule(ModuleType):
    """``torch.cpu`` plus the CUDA-style calls verl makes on its device module."""

    memory_allocated = staticmethod(_zero)
    memory_reserved = staticmethod(_zero)
    max_memory_allocated = staticmethod(_zero)
    max_memory_reserved = staticmethod(_zero)
    reset_peak_memory_stats = staticmethod(_none)
    empty_cache = staticmethod(_none)
    ipc_collect = staticmethod(_none)
    set_device = staticmethod(_none)
    manual_seed = staticmethod(_none)
    manual_seed_all = staticmethod(_none)

    def __init__(self) -> None:
        super().__init__("verl_sod_cpu_device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def get_device_name(*_args: Any) -> str:
        return "cpu"

    @staticmethod
    def mem_get_info(*_args: Any) -> tuple[int, int]:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        free = os.sysconf("SC_AVPHYS_PAGES") * page_size
        return free, pages * page_size

    @staticmethod
    def get_rng_state(*_args: Any) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, *_args: Any) -> None:
        torch.set_rng_state(state)


_DEVICE_MODULE = CPUDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl on CPU: gloo for collectives, Ray's logical GPUs as CPU worker slots."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only VERL_PLATFORM=cpu selects it.
        return cpu_platform_selected()

    def current_device(self) -> str:  # type: ignore[override]  # verl calls .to(current_device())
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
