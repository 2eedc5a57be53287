"""The time-out clock of one tool call: it runs while the tool works, not while it queues.

A tool call's time-out must bound the tool's own work. Waiting for a sandbox slot is not work: at
recipe scale (agent-loop workers x sandbox slots much smaller than the trajectories in flight) the
queue alone can outlast any sensible time-out, and a time-out that counts it reports failures
the model did not cause (they then feed ``tool_error_gate``, the records and the recovery
metrics). So :class:`ToolCallClock` pauses while the call queues:

* the ``sod_tool_agent`` loop runs each tool call under a clock (:meth:`ToolCallClock.run`) and
  makes it visible to the tool through a context variable (:func:`current_tool_clock`; each call
  runs in its own task, so parallel calls of one turn have their own clocks);
* a tool that queues for a shared resource calls :meth:`ToolCallClock.queued` before it waits
  and :meth:`ToolCallClock.acquired` when it has the resource (the ``code_interpreter`` tool passes
  ``acquired`` to the sandbox as its ``on_slot_acquired`` hook). A tool that never reports
  queueing is timed from the start of the call, as before;
* the call times out when its *active* time (elapsed minus queued) exceeds ``timeout_s``.
  ``queue_s`` and ``active_s`` are measured apart and recorded per call.

Queueing itself is not bounded here: a queued call waits for runs that are bounded by their own
time-outs.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["ToolCallClock", "ToolCallTimeoutError", "current_tool_clock"]

T = TypeVar("T")
_CURRENT: contextvars.ContextVar[ToolCallClock | None] = contextvars.ContextVar(
    "sod_tool_clock", default=None
)


class ToolCallTimeoutError(Exception):
    """The tool's active time exceeded the clock's time-out."""


def current_tool_clock() -> ToolCallClock | None:
    """The clock of the tool call running in this task, or None outside ``sod_tool_agent``."""
    return _CURRENT.get()


class ToolCallClock:
    """Active-time clock of one tool call; see the module docstring."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._start: float | None = None
        self._queued_since: float | None = None
        self._queue_s = 0.0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ what tools call
    def queued(self) -> None:
        """The call starts waiting for a shared resource (a sandbox slot): pause the clock."""
        if self._queued_since is None:
            self._queued_since = time.monotonic()
            self._changed.set()

    def acquired(self) -> None:
        """The call has its resource: resume the clock (idempotent; a no-op when not queued)."""
        if self._queued_since is not None:
            self._queue_s += time.monotonic() - self._queued_since
            self._queued_since = None
            self._changed.set()

    # ------------------------------------------------------------------ measurements
    @property
    def queue_s(self) -> float:
        """Seconds spent queued so far."""
        extra = time.monotonic() - self._queued_since if self._queued_since is not None else 0.0
        return self._queue_s + extra

    @property
    def active_s(self) -> float:
        """Seconds the call has run outside any queue so far."""
        if self._start is None:
            return 0.0
        return max(time.monotonic() - self._start - self.queue_s, 0.0)

    # ------------------------------------------------------------------ what the loop calls
    async def run(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` (with this clock current in it) under the active-time time-out.

        Raises :class:`ToolCallTimeoutError` (after cancelling ``coro``) when the active time
        exceeds ``timeout_s``.
        """
        token = _CURRENT.set(self)
        try:
            task: asyncio.Future[Any] = asyncio.ensure_future(coro)  # copies the context: sees self
        finally:
            _CURRENT.reset(token)
        self._start = time.monotonic()
        try:
            while not task.done():
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    timeout = None if self._paused() else self._remaining()
                    if timeout is not None and timeout <= 0:
                        raise ToolCallTimeoutError
                    await asyncio.wait({task, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                self._changed.clear()
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _paused(self) -> bool:
        return self.timeout_s is None or self._queued_since is not None

    def _remaining(self) -> float:
        assert self.timeout_s is not None, "_remaining is only asked while not paused"
        return float(self.timeout_s) - self.active_s
