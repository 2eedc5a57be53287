"""Command line: ``python -m verl_sod doctor``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_sod", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that verl loaded every verl_sod registration")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from verl_sod.doctor import run_doctor

        return run_doctor()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
