"""``python -m verl_sod.eval run|score``: evaluate a model through verl, or score a dump offline.

    python -m verl_sod.eval run --model PATH --data FILE[,FILE...] --out DIR [--k 32] [--cpu] [key=value ...]
    python -m verl_sod.eval score --generations DIR --out DIR [--rescore] [--step N]

See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_sod.eval.report import build_report, markdown, write_report
from verl_sod.tasks import DEFAULT_CPU_TASK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m verl_sod.eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validation-only verl run, then the report")
    run.add_argument("--model", help="model path (default with --cpu: the tiny SFT'd student)")
    run.add_argument("--data", help="comma-separated verl parquet files (ignored with --cpu)")
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--k", type=int, default=None, help="samples per problem (32; 4 with --cpu)")
    run.add_argument("--temperature", type=float, default=1.0)
    run.add_argument("--top-p", type=float, default=0.6)
    run.add_argument("--preset", default="grpo", help="verl_sod preset (only its trainer config is used)")
    run.add_argument("--cpu", action="store_true", help="a tiny local task on CPU (see --task)")
    run.add_argument("--task", default=DEFAULT_CPU_TASK, help=f"--cpu: the task (default {DEFAULT_CPU_TASK})")
    run.add_argument("--problems", type=int, default=8, help="--cpu: number of the task's problems")
    run.add_argument("--rescore", action="store_true", help="re-score the dump offline for the report")
    run.add_argument("overrides", nargs="*", help="extra hydra overrides for verl_sod.train")
    score = sub.add_parser("score", help="report from an existing validation dump")
    score.add_argument("--generations", required=True, type=Path, help="dump directory or one .jsonl")
    score.add_argument("--out", required=True, type=Path)
    score.add_argument("--step", type=int, default=None, help="dump step (default: the latest)")
    score.add_argument("--rescore", action="store_true", help="re-score with verl_sod's rewards")
    score.add_argument("--data-source", default="unknown", help="benchmark for lines without data_source")
    score.add_argument("--threshold", type=float, default=1.0, help="score at which a sample passes")
    return parser


def _score(
    generations: Path, out: Path, step: int | None, rescore: bool, source: str, threshold: float
) -> int:
    try:
        report = build_report(generations, step, rescore, source, threshold)
    except (FileNotFoundError, ValueError) as exc:  # no dump, no usable line, no data_source to re-score
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json_path, md_path = write_report(report, out)
    print(markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from verl_sod.eval import launch

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    k = args.k or (4 if args.cpu else 32)
    if args.cpu:
        inputs = launch.cpu_overrides(out, args.problems, args.task, args.model)
    else:
        if not args.model or not args.data:
            print("run needs --model and --data (or --cpu)", file=sys.stderr)
            return 2
        inputs = launch.gpu_overrides(args.model, args.data.split(","), args.preset)
    overrides = inputs + launch.common_overrides(out, k, args.top_p, args.temperature) + list(args.overrides)
    returncode, seconds = launch.run_validation(overrides, out)
    log = out / "eval.log"
    print(f"verl validation run finished in {seconds:.0f} s with exit status {returncode} (log: {log})")
    if returncode != 0:
        return returncode
    return _score(out / "generations", out, None, args.rescore, "unknown", 1.0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _score(args.generations, args.out, args.step, args.rescore, args.data_source, args.threshold)


if __name__ == "__main__":
    sys.exit(main())
