"""``Sandbox``: the one entry point agent code uses, whatever the backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Protocol

from verl_sod.sandbox.config import SandboxConfig
from verl_sod.sandbox.result import SandboxResult


class _Backend(Protocol):
    level: str

    async def run(
        self,
        code: str,
        stdin: str | None = None,
        timeout_s: float | None = None,
        on_slot_acquired: Callable[[], None] | None = None,
    ) -> SandboxResult: ...

    def close(self) -> None: ...


class Sandbox:
    """Executes untrusted Python code.

    ``await sandbox.run(code, stdin=None, timeout_s=None)`` may be called concurrently from any
    number of coroutines (and event loops); at most ``num_slots`` local runs (or
    ``fusion_max_concurrent`` remote requests) proceed at once, the rest wait their turn.
    ``run_sync`` is the same for synchronous callers. ``on_slot_acquired`` (optional) is called
    once, without arguments, when the run has its slot (or remote request permit), i.e. when
    queueing ends and the run's own time starts; callers use it to time queueing apart.
    Construction of a ``local`` sandbox probes the isolation levels once and raises
    :class:`SandboxUnavailableError` when only the refused ``unsafe`` level would work.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        if self.config.backend == "local":
            from verl_sod.sandbox.local import LocalBackend

            self._backend: _Backend = LocalBackend(self.config)
        else:
            from verl_sod.sandbox.fusion import SandboxFusionBackend

            self._backend = SandboxFusionBackend(self.config)

    @property
    def isolation(self) -> str:
        """The isolation level in use (``sandbox_fusion`` for the remote backend)."""
        return self._backend.level

    async def run(
        self,
        code: str,
        stdin: str | None = None,
        timeout_s: float | None = None,
        on_slot_acquired: Callable[[], None] | None = None,
    ) -> SandboxResult:
        return await self._backend.run(
            code, stdin=stdin, timeout_s=timeout_s, on_slot_acquired=on_slot_acquired
        )

    def run_sync(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        """Blocking ``run``; works with or without an event loop running in this thread."""
        coro = self._backend.run(code, stdin=stdin, timeout_s=timeout_s)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from async code
            return pool.submit(asyncio.run, coro).result()

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
