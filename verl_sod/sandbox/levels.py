"""Which isolation level works here: probes that tolerate a loaded machine, decided once.

A level is *probed* by running a tiny program through its real launch chain. The probe

- holds a slot lock (:func:`.slots.hold_slot`) for the uid it runs as, like a run does, so that no
  other process's sweep of that uid can kill it (the cause of "probe exited -9" when many sandbox
  processes started at once);
- has no tight time limit (:data:`PROBE_TIMEOUT_S`), and a probe that was killed by a signal or ran
  out of time is *inconclusive*, not evidence: it is retried with back-off
  (:data:`PROBE_ATTEMPTS`); only a launch chain that exits with its own error rules a level out.

The choice is made once: a level that probed fine is remembered for the process and on disk
(:mod:`.level_cache`, keyed by everything that decides it), so later processes on this host do not
probe at all. Failures are never written to disk, so a stronger level is always tried again first.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass

from verl_sod.sandbox import level_cache
from verl_sod.sandbox.config import ISOLATION_LEVELS, SandboxConfig
from verl_sod.sandbox.isolation import (
    INSTALL_HINT,
    LOST,
    SandboxUnavailableError,
    build_launch,
    ensure_work_root,
    prepare_run_dir,
    sandbox_env,
    uses_slot_uid,
)
from verl_sod.sandbox.slots import hold_slot

logger = logging.getLogger(__name__)

PROBE_CODE = "import sys; print('sandbox-ok', sys.version_info[0])"
#: Wall-clock limit of one probe attempt: generous, a loaded host may need many seconds.
PROBE_TIMEOUT_S = 120.0
#: Attempts of a probe whose earlier attempts were inconclusive (killed, timed out).
PROBE_ATTEMPTS = 4
#: Delay before the second attempt; doubles for each later one.
PROBE_BACKOFF_S = 0.5


@dataclass(frozen=True)
class ProbeOutcome:
    """``reason`` is None when the level works; ``conclusive`` is False when load may be to blame."""

    reason: str | None
    conclusive: bool = True


def level_requirements(level: str, cfg: SandboxConfig) -> str | None:
    """Why ``level`` cannot work here, judged without running anything; None if it might."""
    root = os.geteuid() == 0
    if level in ("bwrap", "bwrap-same-uid") and shutil.which(cfg.bwrap_path) is None:
        return f"bubblewrap ({cfg.bwrap_path}) not found; {INSTALL_HINT}"
    if level in ("bwrap", "unshare", "uid") and not root:
        return "needs root to switch to the per-slot uid"
    if level == "bwrap-same-uid" and root:
        return "bubblewrap as root does not bound forks; the 'bwrap' level is used for root"
    for tool in ("prlimit", "setpriv", "unshare"):
        if shutil.which(tool) is None and (tool != "unshare" or level == "unshare"):
            return f"{tool} (util-linux) not found"
    if not os.access(cfg.python, os.X_OK):
        return f"python {cfg.python} is not executable"
    return None


def killed_by_signal(level: str, rc: int) -> int | None:
    """The signal that ended the probe, if it died of one (bubblewrap reports it as 128+N)."""
    if rc < 0:
        return -rc
    if level in ("bwrap", "bwrap-same-uid", "unshare") and 128 < rc < 128 + 65:
        return rc - 128
    return None


def probe_once(level: str, cfg: SandboxConfig) -> ProbeOutcome:
    """One attempt, holding a slot so that no sweep of the slot uid can kill it."""
    ensure_work_root(cfg.work_root)
    with hold_slot(cfg) as slot:
        uid = cfg.base_uid + slot if uses_slot_uid(level) else None
        run_dir = prepare_run_dir(cfg.work_root, slot, uid)
        try:
            launch = build_launch(level, cfg, slot, run_dir, 10.0)
            with open(os.path.join(run_dir, "work", "main.py"), "w") as fh:
                fh.write(PROBE_CODE)
            proc = subprocess.run(
                launch.argv,
                cwd=launch.cwd,
                env=sandbox_env(launch),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return ProbeOutcome(f"probe did not finish within {PROBE_TIMEOUT_S:.0f} s", conclusive=False)
        except OSError as exc:
            return ProbeOutcome(f"probe failed to start: {exc}")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    if proc.returncode == 0 and b"sandbox-ok 3" in proc.stdout:
        return ProbeOutcome(None)
    err = proc.stderr.decode(errors="replace").strip()[-400:]
    reason = f"probe exited {proc.returncode}: {err or proc.stdout[-200:]!r}"
    signum = killed_by_signal(level, proc.returncode)
    if signum is not None:
        return ProbeOutcome(f"{reason} (killed by signal {signum})", conclusive=False)
    return ProbeOutcome(reason)


def probe_level(level: str, cfg: SandboxConfig) -> ProbeOutcome:
    """Probe ``level`` now (no cache), retrying inconclusive attempts with back-off."""
    reason = level_requirements(level, cfg)
    if reason is not None:
        return ProbeOutcome(reason)
    outcome = ProbeOutcome("not probed", conclusive=False)
    for attempt in range(PROBE_ATTEMPTS):
        if attempt:
            delay = PROBE_BACKOFF_S * 2 ** (attempt - 1)
            logger.warning(
                "sandbox probe of %r inconclusive (%s); retrying in %.1f s", level, outcome.reason, delay
            )
            time.sleep(delay)
        outcome = probe_once(level, cfg)
        if outcome.conclusive:
            return outcome
    return ProbeOutcome(f"{outcome.reason}; inconclusive {PROBE_ATTEMPTS} times", conclusive=False)


_MEMO: dict[str, str | None] = {}  # cache key digest -> None (works) or a conclusive reason
_MEMO_LOCK = threading.Lock()  # one probe at a time per process: concurrent constructors wait


def level_works(level: str, cfg: SandboxConfig) -> str | None:
    """None if ``level`` works (remembered in this process and on disk), else why not."""
    early = level_requirements(level, cfg)
    if early is not None:
        return early
    key = level_cache.cache_key(level, cfg)
    digest = level_cache.digest(key)
    with _MEMO_LOCK:
        if digest in _MEMO:
            return _MEMO[digest]
        if level_cache.load(key, cfg):
            _MEMO[digest] = None
            return None
        outcome = probe_level(level, cfg)
        if outcome.reason is None:
            level_cache.store(key, cfg)
        if outcome.conclusive:
            _MEMO[digest] = outcome.reason
        return outcome.reason


def refresh_level(level: str, cfg: SandboxConfig) -> str | None:
    """Probe ``level`` afresh and rewrite what is remembered of it (``doctor``); None if it works."""
    key = level_cache.cache_key(level, cfg)
    with _MEMO_LOCK:
        outcome = probe_level(level, cfg)
        if outcome.reason is None:
            level_cache.store(key, cfg)
        else:
            level_cache.forget(key, cfg)
        _MEMO.pop(level_cache.digest(key), None)
        return outcome.reason


def select_level(cfg: SandboxConfig) -> str:
    """The level to use: the forced one, or the strongest that works; warns on any lost isolation."""
    candidates = list(ISOLATION_LEVELS) if cfg.isolation == "auto" else [cfg.isolation]
    reasons: list[str] = []
    for level in candidates:
        if level == "unsafe" and not cfg.allow_unsafe:
            reasons.append("unsafe: refused (set allow_unsafe=True to run model code without isolation)")
            continue
        reason = level_works(level, cfg)
        if reason is None:
            warn_lost(level, reasons)
            return level
        reasons.append(f"{level}: {reason}")
    raise SandboxUnavailableError(
        "no usable sandbox isolation level (see `python -m verl_sod.sandbox doctor`):\n  "
        + "\n  ".join(reasons)
    )


def warn_lost(level: str, reasons: list[str]) -> None:
    if not LOST[level]:
        return
    why = ("; stronger levels failed: " + " | ".join(reasons)) if reasons else ""
    msg = f"verl_sod sandbox running at isolation level {level!r}: LOST {LOST[level]}{why}"
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
