"""Command line: ``python -m verl_sod.data prepare NAME --input PATH --output DIR``.

``bfcl-multi-turn`` reads the installed bfcl-eval instead: ``--input`` is omitted and
``--category base,miss_func,...`` picks the categories (default: all four).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from verl_sod.data.prepare import prepare
from verl_sod.data.sources import BUILTIN_INPUTS, CONVERTERS, Options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m verl_sod.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert a benchmark, training or SFT chat file to verl parquet")
    prep.add_argument("name", choices=sorted(CONVERTERS))
    prep.add_argument(
        "--input", type=Path, default=None, help=".parquet, .jsonl or .json file (omit for bfcl-multi-turn)"
    )
    prep.add_argument("--category", default=None, help="bfcl-multi-turn: comma-separated categories")
    prep.add_argument("--output", required=True, type=Path, help="directory; writes NAME.parquet")
    prep.add_argument("--on-bad-row", choices=["skip", "fail"], default="skip")
    prep.add_argument("--progress-every", type=int, default=1000, help="progress line every N rows")
    prep.add_argument("--split", default=None, help="extra_info.split (default: train or test by dataset)")
    prep.add_argument("--data-source", default=None, help="override the data_source written")
    prep.add_argument("--date-from", default=None, help="LiveCodeBench official: contest_date >= YYYY-MM-DD")
    prep.add_argument("--date-to", default=None, help="LiveCodeBench official: contest_date <= YYYY-MM-DD")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(
        split=args.split, data_source=args.data_source, date_from=args.date_from, date_to=args.date_to
    )
    if args.input is not None:
        return _prepare(args, args.input, options)
    if args.name not in BUILTIN_INPUTS:
        print(f"prepare {args.name}: --input PATH is required", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        try:
            input_path = BUILTIN_INPUTS[args.name](Path(tmp), args.category)
        except (ValueError, RuntimeError) as exc:  # unknown category, bfcl-eval missing or changed
            print(f"prepare {args.name}: {exc}", file=sys.stderr)
            return 2
        return _prepare(args, input_path, options)


def _prepare(args: argparse.Namespace, input_path: Path, options: Options) -> int:
    status, _ = prepare(
        args.name,
        input_path,
        args.output,
        on_bad_row=args.on_bad_row,
        options=options,
        progress_every=args.progress_every,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
