"""Command line: ``python -m verl_sod.sandbox run FILE`` and ``python -m verl_sod.sandbox doctor``.

``run`` prints exactly one JSON line ``{"status", "stdout", "stderr", "exit_code", "duration_s"}``
(warnings go to stderr; ``--warm`` runs it through the warm pool); its exit status is 0 unless the
sandbox itself could not be set up.
``doctor`` lists every isolation level with whether it works here, and exits 1 when the strongest
working level is ``unsafe`` or nothing works.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable

from verl_sod.sandbox.config import ISOLATION_LEVELS, SandboxConfig


def _run(args: argparse.Namespace) -> int:
    from verl_sod.sandbox.api import Sandbox
    from verl_sod.sandbox.isolation import SandboxUnavailableError

    with open(args.file, encoding="utf-8") as fh:
        code = fh.read()
    stdin = sys.stdin.read() if args.stdin else None
    changes: dict[str, object] = {"backend": args.backend}
    if args.timeout is not None:
        changes["timeout_s"] = args.timeout
    if args.memory_mb is not None:
        changes["memory_mb"] = args.memory_mb
    if args.isolation is not None:
        changes["isolation"] = args.isolation
    if args.url is not None:
        changes["fusion_url"] = args.url
    if args.base_uid is not None:
        changes["base_uid"] = args.base_uid
    if args.work_root is not None:
        changes["work_root"] = args.work_root
    if args.warm:
        changes["warm"] = True
        changes["warm_imports"] = tuple(args.warm_import)
    try:
        cfg = SandboxConfig(num_slots=1, allow_unsafe=args.allow_unsafe, **changes)  # type: ignore[arg-type]
        with Sandbox(cfg) as sandbox:
            result = sandbox.run_sync(code, stdin=stdin)
    except (SandboxUnavailableError, ValueError) as exc:
        print(f"sandbox unavailable: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()))
    return 0


def doctor(out: Callable[[str], None] = print) -> int:
    """Probe every isolation level afresh (and refresh the per-host cache); 0 if a safe one works."""
    from verl_sod.sandbox.isolation import LOST
    from verl_sod.sandbox.levels import refresh_level
    from verl_sod.sandbox.slots import lock_dir

    cfg = SandboxConfig()
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for level in ISOLATION_LEVELS:
            reason = None if level == "unsafe" else refresh_level(level, cfg)
            works = reason is None
            best = best or (level if works else None)
            detail = "works" if works else f"unavailable: {reason}"
            lost = f" (loses {LOST[level]})" if works and LOST[level] else ""
            out(f"  {level:15s} {detail}{lost}")
    out(f"python in sandbox: {cfg.python}; base uid {cfg.base_uid}; work root {cfg.work_root}")
    out(f"isolation cache (levels that work, refreshed now): {lock_dir(cfg)}/verl_sod_sandbox.isolation-*")
    if best is None or best == "unsafe":
        out("RESULT: only unsafe execution is possible here; apt-get install -y bubblewrap")
        return 1
    out(f"RESULT: best isolation level is {best!r}" + ("" if best == "bwrap" else " (degraded)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_sod.sandbox", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a Python file in the sandbox; print one JSON line")
    run.add_argument("file")
    run.add_argument("--timeout", type=float, default=None, help="seconds (default: SandboxConfig)")
    run.add_argument("--memory-mb", type=int, default=None)
    run.add_argument("--backend", default="local", choices=["local", "sandbox_fusion"])
    run.add_argument("--isolation", default=None, choices=["auto", *ISOLATION_LEVELS])
    run.add_argument("--url", default=None, help="SandboxFusion base URL (else $VERL_SOD_SANDBOX_FUSION_URL)")
    run.add_argument("--base-uid", type=int, default=None, help="first slot uid (default: SandboxConfig)")
    run.add_argument("--work-root", default=None, help="parent of the run directories")
    run.add_argument("--stdin", action="store_true", help="pass this process's stdin to the program")
    run.add_argument("--warm", action="store_true", help="run through a warm interpreter (zygote)")
    run.add_argument("--warm-import", action="append", default=[], help="module the zygote pre-imports")
    run.add_argument("--allow-unsafe", action="store_true", help="permit running with no isolation")
    sub.add_parser("doctor", help="show which isolation levels work here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.command == "run":
        return _run(args)
    return doctor()


if __name__ == "__main__":
    sys.exit(main())
