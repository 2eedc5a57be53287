"""A TCP server on 127.0.0.1 that accepts connections, reads what is sent, and never answers.

Stands in for a SandboxFusion server that hangs (``test_sandbox_fusion_on_cpu.py``,
``test_rewards_code_on_cpu.py``). ``accepted`` counts connections, i.e. HTTP attempts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class SilentServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._conns)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.recv(1 << 16)  # the request, if it is already there; never answered
            with self._lock:
                self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            for conn in self._conns:
                conn.close()
        self._listener.close()


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
