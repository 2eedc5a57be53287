"""SandboxFusion client against a fake server on 127.0.0.1 that speaks the ``/run_code`` JSON.

The fake server picks its reply from a marker in the submitted code, records every request, and
tracks how many requests are in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from silent_server import silent_server

from verl_sod.sandbox import Sandbox, SandboxConfig
from verl_sod.sandbox.config import FUSION_URL_ENV


def _run_result(status: str, rc: int | None, stdout: str = "", stderr: str = "") -> dict[str, Any]:
    return {"status": status, "execution_time": 0.01, "return_code": rc, "stdout": stdout, "stderr": stderr}


class FakeFusion:
    """State shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def reply(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        code = payload["code"]
        key = code.split("#", 1)[-1]
        with self.lock:
            self.requests.append(payload)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            attempt = self.attempts[key]
        if ("FLAKY" in code and attempt == 1) or "ALWAYS504" in code:
            return 504, {"detail": "gateway time-out"}
        if "HTTP400" in code:
            return 400, {"detail": "bad request"}
        if "SLOW" in code:
            time.sleep(0.15)
        if "HANG" in code:
            time.sleep(1.5)
        if "RESULT_FAIL" in code:
            tb = "Traceback (most recent call last):\nZeroDivisionError: division by zero\n"
            return 200, {"status": "Failed", "message": "", "run_result": _run_result("Finished", 1, "", tb)}
        if "RESULT_TLE" in code:
            return 200, {
                "status": "Failed",
                "message": "",
                "run_result": _run_result("TimeLimitExceeded", None),
            }
        if "RESULT_SBERR" in code:
            return 200, {"status": "SandboxError", "message": "executor crashed", "run_result": None}
        out = "z" * 100_000 if "BIG" in code else f"echo:{payload.get('stdin')}"
        return 200, {"status": "Success", "message": "", "run_result": _run_result("Finished", 0, out, "")}


def _handler(state: FakeFusion) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            assert self.path == "/run_code"
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                status, body = state.reply(payload)
            finally:
                with state.lock:
                    state.in_flight -= 1
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeFusion]]:
    state = FakeFusion()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _sandbox(url: str, **changes: Any) -> Sandbox:
    values: dict[str, Any] = {"backend": "sandbox_fusion", "fusion_url": url, "fusion_backoff_s": 0.01}
    values.update(changes)
    return Sandbox(SandboxConfig(**values))


def test_success_and_request_shape(fake: tuple[str, FakeFusion]) -> None:
    url, state = fake
    with _sandbox(url, memory_mb=512) as sb:
        r = sb.run_sync("print(input()) #ok", stdin="abc", timeout_s=3)
    assert (r.status, r.stdout, r.exit_code) == ("ok", "echo:abc", 0)
    sent = state.requests[0]
    assert sent["language"] == "python" and sent["run_timeout"] == 3 and sent["compile_timeout"] == 3
    assert sent["memory_limit_MB"] == 512 and sent["stdin"] == "abc" and sent["code"].startswith("print(")


def test_failure_timeout_and_sandbox_error_mapping(fake: tuple[str, FakeFusion]) -> None:
    url, _ = fake
    with _sandbox(url) as sb:
        fail = sb.run_sync("RESULT_FAIL #a")
        tle = sb.run_sync("RESULT_TLE #b")
        sberr = sb.run_sync("RESULT_SBERR #c")
    assert fail.status == "error" and fail.exit_code == 1 and "ZeroDivisionError" in fail.stderr
    assert tle.status == "timeout"
    assert sberr.status == "sandbox_error" and "executor crashed" in sberr.stderr


def test_retry_after_504(fake: tuple[str, FakeFusion]) -> None:
    url, state = fake
    with _sandbox(url, fusion_retries=2) as sb:
        r = sb.run_sync("FLAKY #retry-me")
        assert r.status == "ok" and state.attempts["retry-me"] == 2
        r = sb.run_sync("ALWAYS504 #never")
        assert r.status == "sandbox_error" and "3 tries" in r.stderr and state.attempts["never"] == 3
        r = sb.run_sync("HTTP400 #bad")
        assert r.status == "sandbox_error" and "HTTP 400" in r.stderr and state.attempts["bad"] == 1


def test_connection_error_and_http_timeout(fake: tuple[str, FakeFusion]) -> None:
    url, _ = fake
    with _sandbox("http://127.0.0.1:9", fusion_retries=1) as sb:  # discard port: nothing listens
        r = sb.run_sync("print(1)")
    assert r.status == "sandbox_error" and "connection error" in r.stderr
    start = time.monotonic()
    with _sandbox(url, fusion_retries=0, fusion_http_slack_s=0.2) as sb:
        r = sb.run_sync("HANG #slow", timeout_s=0.1)
    assert r.status == "sandbox_error" and time.monotonic() - start < 1.4


def test_server_that_never_answers_is_bounded_by_one_deadline() -> None:
    """Accepts, never answers: one attempt uses the whole deadline, and no retry follows it."""
    with silent_server() as server, _sandbox(server.url, fusion_retries=3, fusion_http_slack_s=0.5) as sb:
        start = time.monotonic()
        r = sb.run_sync("print(1)", timeout_s=0.5)
        elapsed = time.monotonic() - start
        accepted = server.accepted
    assert r.status == "sandbox_error" and r.exit_code is None
    assert "no reply within this call's deadline of 1.5 s (1 tries" in r.stderr, r.stderr
    assert accepted == 1  # the three retries would each have waited another full HTTP time-out
    assert elapsed >= 1.5 and r.duration_s >= 1.5


def test_retries_stop_at_the_deadline(fake: tuple[str, FakeFusion]) -> None:
    """Back-off that would run past the deadline is not slept: the call ends at its deadline."""
    url, state = fake
    with _sandbox(url, fusion_retries=6, fusion_backoff_s=0.4, fusion_http_slack_s=1.0) as sb:
        r = sb.run_sync("ALWAYS504 #deadline", timeout_s=0.25)  # deadline 1.5 s: tries at 0, 0.4, 1.2 s
    assert r.status == "sandbox_error" and "deadline of 1.5 s" in r.stderr and "HTTP 504" in r.stderr
    assert 1 <= state.attempts["deadline"] <= 3  # 3 unless the machine is slow; 7 without the deadline


def test_call_deadline_matches_the_documented_bound() -> None:
    from verl_sod.sandbox.fusion import SandboxFusionBackend

    backend = SandboxFusionBackend(SandboxConfig(backend="sandbox_fusion", fusion_url="http://127.0.0.1:9"))
    assert backend.call_deadline_s(10.0) == 2 * 10.0 + SandboxConfig().fusion_http_slack_s == 30.0
    backend.close()


def test_concurrency_bound_respected(fake: tuple[str, FakeFusion]) -> None:
    url, state = fake
    with _sandbox(url, fusion_max_concurrent=3) as sb:

        async def main() -> list:
            return await asyncio.gather(*(sb.run(f"SLOW #{i}", stdin=str(i)) for i in range(12)))

        results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"echo:{i}" for i in range(12)]
    assert state.max_in_flight == 3


def test_output_cap_applies(fake: tuple[str, FakeFusion]) -> None:
    url, _ = fake
    with _sandbox(url, max_output_bytes=1000) as sb:
        r = sb.run_sync("BIG #big")
    assert r.stdout == "z" * 1000 + "...[truncated 99000 bytes]"


def test_url_from_env_only(fake: tuple[str, FakeFusion], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = fake
    monkeypatch.delenv(FUSION_URL_ENV, raising=False)
    with pytest.raises(ValueError, match=FUSION_URL_ENV):
        Sandbox(SandboxConfig(backend="sandbox_fusion"))
    monkeypatch.setenv(FUSION_URL_ENV, url + "/")
    with Sandbox(SandboxConfig(backend="sandbox_fusion")) as sb:
        assert sb.run_sync("x #env").status == "ok"


def test_cli_with_fusion_backend(fake: tuple[str, FakeFusion], tmp_path: Any) -> None:
    url, _ = fake
    prog = tmp_path / "prog.py"
    prog.write_text("print('hi') #cli")
    cmd = [
        sys.executable,
        "-m",
        "verl_sod.sandbox",
        "run",
        str(prog),
        "--backend",
        "sandbox_fusion",
        "--url",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"
