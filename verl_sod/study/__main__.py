"""CLI: ``python -m verl_sod.study run SPEC.yaml [--out DIR] [--dry-run]`` and ``... report DIR``.

Exit codes: 0 done, 1 a run failed (the study can be resumed), 2 bad input (spec, directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_sod.report.records import ReportError
from verl_sod.study.spec import SpecError, load_spec


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m verl_sod.study", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) every arm x seed of a study spec")
    r.add_argument("spec", help="study spec YAML (docs/studies/*/spec.yaml)")
    r.add_argument("--out", default=None, help="study directory (default outputs/studies/<name>)")
    r.add_argument("--dry-run", action="store_true", help="print every run and its overrides, run nothing")
    p = sub.add_parser("report", help="paired contrasts, tables and plots from a study directory")
    p.add_argument("dir", help="study directory (holds spec.yaml and summaries/)")
    p.add_argument("--out", default=None, help="report directory (default DIR/report)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            from verl_sod.study.run import plan, run_study

            spec = load_spec(args.spec)
            out = Path(args.out) if args.out else Path("outputs/studies") / spec.name
            if args.dry_run:
                print("\n".join(plan(spec, out)))
            else:
                run_study(spec, out)
        else:
            from verl_sod.study.report import write_report

            write_report(Path(args.dir), Path(args.out) if args.out else None)
    except (SpecError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc} (rerun the same command to resume)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
