"""Configuration of the code sandbox: one dataclass, validated on construction.

Every limit has a range check so that a typo in a YAML file (``memory_mb: 0``) fails loudly at
start-up instead of producing a sandbox that kills every program or bounds nothing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("local", "sandbox_fusion")
#: Isolation levels of the local backend, strongest first. ``auto`` picks the strongest that works.
ISOLATION_LEVELS = ("bwrap", "bwrap-same-uid", "unshare", "uid", "unsafe")
FUSION_URL_ENV = "VERL_SOD_SANDBOX_FUSION_URL"


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ValueError(f"SandboxConfig.{name}={value!r} is out of range [{low}, {high}]")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and wiring of a :class:`verl_sod.sandbox.Sandbox`.

    Fields (local backend unless noted):

    - ``backend``: ``"local"`` (run here, isolated) or ``"sandbox_fusion"`` (HTTP client).
    - ``timeout_s``: default wall-clock limit of one run; RLIMIT_CPU is ``ceil(timeout_s) + 1``.
    - ``memory_mb``: address-space limit (RLIMIT_AS) in MiB; also sent to SandboxFusion.
    - ``max_processes``: RLIMIT_NPROC of the slot uid (processes + threads of one run).
    - ``max_file_mb``: largest file a run may write (RLIMIT_FSIZE), in MiB.
    - ``max_open_files``: RLIMIT_NOFILE.
    - ``max_workdir_mb`` / ``max_workdir_files``: a run whose work directory (``/work``, ``/tmp``
      and ``/dev/shm`` inside bubblewrap) grows past this many MiB or entries is killed. Checked
      every ``cleanup.WATCH_INTERVAL_S`` (0.25 s), so a fast writer can overshoot by what it writes in that
      time (RLIMIT_FSIZE still caps each file).
    - ``max_output_bytes``: bytes of stdout and of stderr kept; the rest is replaced by a
      ``...[truncated N bytes]`` marker (both backends).
    - ``kill_output_bytes``: a run whose stdout or stderr passes this many bytes is killed
      (bounds the time spent draining a flood); must be >= ``max_output_bytes``.
    - ``python``: interpreter run inside the sandbox. It must be readable by an unprivileged uid
      (``/root`` is 0700, so not a venv or pyenv there); Debian's ``/usr/bin/python3`` by default.
    - ``num_slots``: concurrent runs; each slot has its own uid and work directory.
    - ``base_uid``: slot ``i`` runs as uid/gid ``base_uid + i``; pick a range with no real users.
    - ``work_root``: parent of the per-run work directories (created 0711, owned by the caller).
    - ``isolation``: ``"auto"`` or one of :data:`ISOLATION_LEVELS` to force a level.
    - ``allow_unsafe``: permit the ``unsafe`` level (plain subprocess as the calling user).
    - ``bwrap_path``: bubblewrap binary.
    - ``extra_ro_binds``: extra host paths made visible read-only inside bubblewrap.
    - ``keep_workdirs``: leave work directories behind after a run (debugging only).
    - ``warm``: serve local runs from a warm interpreter pool: per slot one long-lived "zygote"
      started through the same isolation chain (bwrap levels only; other levels run cold with a
      warning), which forks once per run; see ``docs/sandbox.md``. ``False``: a fresh interpreter
      per run.
    - ``warm_imports``: modules each zygote imports once before its first run (e.g.
      ``("numpy",)``); a failing import makes every warm run a ``sandbox_error``.
    - ``warm_max_runs``: a zygote is replaced after this many runs (and after any time-out, kill,
      left-over process, file or IPC object, and whenever it dies).
    - ``fusion_url``: SandboxFusion base URL; ``None`` reads ``$VERL_SOD_SANDBOX_FUSION_URL``.
    - ``fusion_max_concurrent``: in-flight HTTP requests to SandboxFusion.
    - ``fusion_retries``: extra attempts after an HTTP 5xx or connection error, while the call's
      deadline allows.
    - ``fusion_backoff_s``: first retry delay; doubles each retry.
    - ``fusion_http_slack_s``: one SandboxFusion call (every attempt and back-off) ends within
      ``2 * timeout_s + fusion_http_slack_s`` seconds (the server's compile and run time-outs are
      both ``timeout_s``) of getting one of the ``fusion_max_concurrent`` places; waiting for a
      place is not counted (each call ahead of it is bounded the same way).
    """

    backend: str = "local"
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 256
    max_workdir_mb: int = 256
    max_workdir_files: int = 10_000
    max_output_bytes: int = 64 * 1024
    kill_output_bytes: int = 4 * 1024 * 1024
    python: str = "/usr/bin/python3"
    num_slots: int = 4
    base_uid: int = 61000
    work_root: str = "/tmp/verl_sod_sandbox"
    isolation: str = "auto"
    allow_unsafe: bool = False
    bwrap_path: str = "bwrap"
    extra_ro_binds: tuple[str, ...] = field(default_factory=tuple)
    keep_workdirs: bool = False
    warm: bool = False
    warm_imports: tuple[str, ...] = field(default_factory=tuple)
    warm_max_runs: int = 1000
    fusion_url: str | None = None
    fusion_max_concurrent: int = 8
    fusion_retries: int = 3
    fusion_backoff_s: float = 0.5
    fusion_http_slack_s: float = 10.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"SandboxConfig.backend={self.backend!r}: expected one of {BACKENDS}")
        if self.isolation != "auto" and self.isolation not in ISOLATION_LEVELS:
            raise ValueError(
                f"SandboxConfig.isolation={self.isolation!r}: expected 'auto' or one of {ISOLATION_LEVELS}"
            )
        _check_range("timeout_s", self.timeout_s, 0.05, 3600)
        _check_range("memory_mb", self.memory_mb, 32, 1 << 20)
        _check_range("max_processes", self.max_processes, 1, 100_000)
        _check_range("max_file_mb", self.max_file_mb, 0, 1 << 20)
        _check_range("max_open_files", self.max_open_files, 16, 1 << 20)
        _check_range("max_workdir_mb", self.max_workdir_mb, 1, 1 << 24)
        _check_range("max_workdir_files", self.max_workdir_files, 10, 10_000_000)
        _check_range("max_output_bytes", self.max_output_bytes, 256, 1 << 30)
        _check_range("kill_output_bytes", self.kill_output_bytes, self.max_output_bytes, 1 << 32)
        _check_range("num_slots", self.num_slots, 1, 1024)
        _check_range("base_uid", self.base_uid, 1000, (1 << 31) - 1 - self.num_slots)
        _check_range("fusion_max_concurrent", self.fusion_max_concurrent, 1, 4096)
        _check_range("fusion_retries", self.fusion_retries, 0, 20)
        _check_range("fusion_backoff_s", self.fusion_backoff_s, 0.0, 60.0)
        _check_range("fusion_http_slack_s", self.fusion_http_slack_s, 0.0, 600.0)
        if not os.path.isabs(self.python):
            raise ValueError(f"SandboxConfig.python={self.python!r} must be an absolute path")
        if not os.path.isabs(self.work_root):
            raise ValueError(f"SandboxConfig.work_root={self.work_root!r} must be an absolute path")
        for path in self.extra_ro_binds:
            if not os.path.isabs(path):
                raise ValueError(f"SandboxConfig.extra_ro_binds entry {path!r} must be an absolute path")
        object.__setattr__(self, "extra_ro_binds", tuple(self.extra_ro_binds))
        _check_range("warm_max_runs", self.warm_max_runs, 1, 1_000_000)
        if isinstance(self.warm_imports, str):
            raise ValueError(
                f"SandboxConfig.warm_imports={self.warm_imports!r} must be a list of module names"
            )
        for name in self.warm_imports:
            if not (isinstance(name, str) and name and all(p.isidentifier() for p in name.split("."))):
                raise ValueError(f"SandboxConfig.warm_imports entry {name!r} is not a module name")
        object.__setattr__(self, "warm_imports", tuple(self.warm_imports))

    def resolved_fusion_url(self) -> str:
        """The SandboxFusion base URL from the config or the environment; raises if neither is set."""
        url = self.fusion_url or os.environ.get(FUSION_URL_ENV, "").strip()
        if not url:
            raise ValueError(
                f"sandbox_fusion backend needs a URL: set SandboxConfig.fusion_url or ${FUSION_URL_ENV}"
            )
        return url.rstrip("/")

    def replace(self, **changes: Any) -> SandboxConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SandboxConfig:
        """Build from a plain mapping (e.g. an OmegaConf node); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SandboxConfig keys: {unknown}")
        return cls(**values)
