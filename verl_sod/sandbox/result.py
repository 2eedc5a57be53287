"""The result type shared by every backend, and the output cap that feeds it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from verl_sod.fields import SANDBOX_STATUSES

Status = Literal["ok", "error", "timeout", "sandbox_error"]
STATUSES: tuple[str, ...] = SANDBOX_STATUSES


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    ``status``: ``ok`` (exit code 0), ``error`` (non-zero exit, signal, resource limit other than
    time), ``timeout`` (wall-clock or CPU-time limit) or ``sandbox_error`` (the sandbox itself
    failed; the code may not have run). ``exit_code`` is the program's exit status, negative for a
    signal, ``None`` when there is none (time-out kill, sandbox error). ``duration_s`` is the
    wall-clock time the caller waited, slot wait excluded.
    """

    status: Status
    stdout: str
    stderr: str
    exit_code: int | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def truncation_marker(dropped: int) -> str:
    return f"...[truncated {dropped} bytes]"


class CappedBuffer:
    """Keeps the first ``cap`` bytes written to it and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._chunks: list[bytes] = []
        self.kept = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.kept
        if room > 0:
            piece = data[:room]
            self._chunks.append(piece)
            self.kept += len(piece)

    @property
    def dropped(self) -> int:
        return self.total - self.kept

    def text(self, dropped_is_lower_bound: bool = False) -> str:
        """Decoded kept bytes, with a visible marker when anything was dropped."""
        out = b"".join(self._chunks).decode("utf-8", errors="replace")
        if self.dropped:
            marker = truncation_marker(self.dropped)
            if dropped_is_lower_bound:
                marker = marker.replace("truncated ", "truncated at least ")
            out += marker
        return out


def cap_text(text: str, cap: int) -> str:
    """Apply the same cap and marker to an already complete string (remote backends)."""
    buf = CappedBuffer(cap)
    buf.feed(text.encode("utf-8", errors="replace"))
    return buf.text()
