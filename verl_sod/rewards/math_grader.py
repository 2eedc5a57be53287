"""Math answers graded with math-verify, bounded in wall-clock time.

math-verify bounds its own work with ``signal.alarm``, which only works in a process's main thread:
verl calls reward functions from a thread pool, where math-verify would refuse to run with time-outs.
A computation stuck inside C code (a huge integer power, a factorial) can also outlive the alarm.
So by default (``isolation="process"``) answers are graded in small worker processes
(:mod:`verl_sod.rewards._math_worker`) that the caller kills when a wall-clock deadline passes; a
killed worker is replaced on the next call. ``isolation="inline"`` grades in the calling process
(main thread only, otherwise it falls back to a worker) and relies on math-verify's alarms alone.

Before any of that, answers equal after light normalisation (spaces, ``$``, ``\\text{}``, a trailing
period, and letter case when no LaTeX command is left) count as correct without parsing, and
over-long answers are compared as strings only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")
MAX_PARSED_CHARS = 1000  # longer answers are compared as normalised strings only
_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MathVerdict:
    """Outcome of grading one answer: ``timed_out`` means the deadline passed (counted wrong)."""

    correct: bool
    timed_out: bool = False
    error: str = ""


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")


def normalize_answer(answer: str) -> str:
    """Light, meaning-preserving normalisation used for the string fast path."""
    text = _TEXT_WRAPPERS.sub(r"\1", answer)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "")
    text = text.replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    text = re.sub(r"\s+", "", text).strip("$").rstrip(".")
    return text if "\\" in text else text.lower()


class _Worker:
    """One grading process, used by one thread at a time."""

    def __init__(self, memory_mb: int, script: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(script), str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._buffer = b""
        ready = self._read_line(time.monotonic() + _READY_TIMEOUT_S)
        if ready is None:
            self.kill()
            raise RuntimeError("math-verify worker did not start")

    def _read_line(self, deadline: float) -> dict | None:
        assert self.proc.stdout is not None  # started with stdout=PIPE
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def ask(self, request: dict, wall_s: float) -> dict | None:
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        return self._read_line(time.monotonic() + wall_s)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()


class WorkerPool:
    """At most ``size`` workers; callers block while all are busy. ``script`` is for tests."""

    def __init__(
        self, size: int = 2, memory_mb: int = 2048, script: Path = WORKER_SCRIPT, grace_s: float = 2.0
    ) -> None:
        self.memory_mb = memory_mb
        self.grace_s = grace_s
        self.script = script
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def grade(self, pred: str, gold: str, timeout_s: float) -> MathVerdict:
        seconds = max(1, round(timeout_s))
        wall_s = 3 * seconds + self.grace_s  # gold parse, answer parse and comparison, each alarmed
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker(self.memory_mb, self.script)
            reply = worker.ask({"pred": pred, "gold": gold, "timeout": seconds}, wall_s)
            if reply is None:
                worker.kill()
                return MathVerdict(False, timed_out=True, error=f"grading exceeded {wall_s:.0f}s")
            with self._lock:
                self._idle.append(worker)
        return MathVerdict(bool(reply["correct"]), error=str(reply.get("error", "")))

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> WorkerPool:
    """The process-wide pool; its size comes from ``VERL_SOD_MATH_WORKERS`` (default 2)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool(size=int(os.environ.get("VERL_SOD_MATH_WORKERS", "2")))
        return _POOL


def _grade_inline(pred: str, gold: str, timeout_s: float) -> MathVerdict:
    from math_verify import parse, verify

    seconds = max(1, round(timeout_s))
    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=seconds)
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=seconds)
    if not gold_parsed:
        return MathVerdict(False, error="ground truth could not be parsed")
    if not pred_parsed:
        return MathVerdict(False, error="answer could not be parsed")
    return MathVerdict(bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds)))


def grade_math(
    pred: str,
    gold: str,
    *,
    timeout_s: float = 5.0,
    isolation: str = "process",
    pool: WorkerPool | None = None,
) -> MathVerdict:
    """Is ``pred`` (a boxed answer's content) equivalent to ``gold``? Always returns in bounded time."""
    if isolation not in ("process", "inline"):
        raise ValueError(f"math isolation must be 'process' or 'inline', got {isolation!r}")
    gold = gold.strip().strip("$")
    if not gold:
        return MathVerdict(False, error="empty ground truth")
    if normalize_answer(pred) == normalize_answer(gold):
        return MathVerdict(True)
    if len(pred) > MAX_PARSED_CHARS:
        return MathVerdict(False, error=f"answer longer than {MAX_PARSED_CHARS} characters")
    if isolation == "inline" and threading.current_thread() is threading.main_thread():
        return _grade_inline(pred, gold, timeout_s)
    return (pool or default_pool()).grade(pred, gold, timeout_s)
