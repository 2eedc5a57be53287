"""Client of a SandboxFusion server (``POST {url}/run_code``), with time-outs, retries and a bound.

Request: ``{"code", "language": "python", "compile_timeout", "run_timeout", "memory_limit_MB",
"stdin"}``. Response: ``status`` is ``Success`` | ``Failed`` | ``SandboxError`` (+ ``message``);
``run_result`` has ``status`` (``Finished`` | ``Error`` | ``TimeLimitExceeded``), ``return_code``,
``stdout``, ``stderr``, ``execution_time``. The URL comes only from the config or
``$VERL_SOD_SANDBOX_FUSION_URL``. One call has one deadline, ``2 * timeout_s + fusion_http_slack_s``
from when it gets one of the ``fusion_max_concurrent`` places: every HTTP attempt and back-off fits
in it (each attempt's socket time-out is what is left), and the caller gets a ``sandbox_error`` when
it passes even if a worker thread is still stuck on the socket. HTTP runs in a private thread pool
(stdlib ``urllib``, no extra dependency) whose size is the concurrency bound, behind an
``asyncio.Semaphore`` per event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from verl_sod.sandbox.config import SandboxConfig
from verl_sod.sandbox.result import SandboxResult, cap_text

logger = logging.getLogger(__name__)


class _TransientError(Exception):
    """HTTP 5xx or a connection failure: worth another try."""


class _PermanentError(Exception):
    """HTTP 4xx or an unreadable reply: retrying will not help."""


def _post_json(url: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    data = json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", errors="replace")
        if exc.code >= 500:
            raise _TransientError(f"HTTP {exc.code}: {detail}") from exc
        raise _PermanentError(f"HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise _TransientError(f"connection error: {exc}") from exc
    try:
        reply = json.loads(body)
    except ValueError as exc:
        raise _PermanentError(f"reply is not JSON: {body[:200]!r}") from exc
    if not isinstance(reply, dict):
        raise _PermanentError(f"reply is not a JSON object: {body[:200]!r}")
    return reply


def map_reply(reply: dict[str, Any], max_output_bytes: int, duration_s: float) -> SandboxResult:
    """Translate a SandboxFusion ``run_code`` reply into a :class:`SandboxResult`."""
    run = reply.get("run_result") or {}
    compile_ = reply.get("compile_result") or {}
    stdout = cap_text(str(run.get("stdout") or ""), max_output_bytes)
    stderr = cap_text(str(run.get("stderr") or ""), max_output_bytes)
    code = run.get("return_code")
    exit_code = int(code) if isinstance(code, int) else None
    status = reply.get("status")
    if "TimeLimitExceeded" in (run.get("status"), compile_.get("status")):
        return SandboxResult("timeout", stdout, stderr, exit_code, duration_s)
    if status == "Success":
        return SandboxResult("ok", stdout, stderr, exit_code if exit_code is not None else 0, duration_s)
    if status == "Failed":
        if not run and compile_:
            stderr = cap_text(str(compile_.get("stderr") or ""), max_output_bytes)
        return SandboxResult("error", stdout, stderr, exit_code, duration_s)
    message = str(reply.get("message") or f"unexpected SandboxFusion status {status!r}")
    return SandboxResult("sandbox_error", stdout, _join(stderr, message), exit_code, duration_s)


def _join(text: str, note: str) -> str:
    return f"{text}\n{note}" if text else note


class SandboxFusionBackend:
    """Runs code on a SandboxFusion server; safe to call concurrently from many coroutines."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self.url = cfg.resolved_fusion_url() + "/run_code"
        self.level = "sandbox_fusion"
        self._pool = ThreadPoolExecutor(max_workers=cfg.fusion_max_concurrent, thread_name_prefix="fusion")
        self._lock = threading.Lock()
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _payload(self, code: str, stdin: str | None, timeout: float) -> dict[str, Any]:
        return {
            "code": code,
            "language": "python",
            "compile_timeout": timeout,
            "run_timeout": timeout,
            "memory_limit_MB": self.cfg.memory_mb,
            "stdin": stdin,
        }

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._sems.setdefault(loop, asyncio.Semaphore(self.cfg.fusion_max_concurrent))

    def call_deadline_s(self, timeout: float) -> float:
        """How long one call may take once it has its place: every attempt and back-off included."""
        return 2 * timeout + self.cfg.fusion_http_slack_s  # compile + run time-outs + slack, as verl's

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        timeout = self.cfg.timeout_s if timeout_s is None else float(timeout_s)
        if not 0 < timeout <= 3600:
            raise ValueError(f"timeout_s={timeout!r} is out of range (0, 3600]")
        payload = self._payload(code, stdin, timeout)
        async with self._semaphore():
            start = time.monotonic()
            reply = await self._attempts(payload, start, self.call_deadline_s(timeout))
        if isinstance(reply, str):
            return SandboxResult("sandbox_error", "", f"SandboxFusion: {reply}", None, _since(start))
        return map_reply(reply, self.cfg.max_output_bytes, _since(start))

    async def _attempts(self, payload: dict[str, Any], start: float, budget: float) -> dict[str, Any] | str:
        """The server's reply, or why none came within ``budget`` s of ``start`` (transient failures
        are retried with back-off while the deadline allows)."""
        loop = asyncio.get_running_loop()
        deadline, last, tries = start + budget, "", 0
        for attempt in range(self.cfg.fusion_retries + 1):
            delay = self.cfg.fusion_backoff_s * 2 ** (attempt - 1) if attempt else 0.0
            if time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            remaining = deadline - time.monotonic()
            tries += 1
            post = loop.run_in_executor(self._pool, _post_json, self.url, payload, remaining)
            try:
                return await asyncio.wait_for(post, remaining)
            except asyncio.TimeoutError:
                last = "the server did not answer"
                break
            except _TransientError as exc:
                last = str(exc)
                logger.warning("SandboxFusion attempt %d failed: %s", attempt + 1, last)
            except _PermanentError as exc:
                return str(exc)
        if tries == self.cfg.fusion_retries + 1 and time.monotonic() < deadline:
            return f"{tries} tries failed: {last}"
        return f"no reply within this call's deadline of {budget:.1f} s ({tries} tries; last: {last})"


def _since(start: float) -> float:
    return time.monotonic() - start
