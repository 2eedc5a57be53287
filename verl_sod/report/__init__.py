"""Report on the per-step SOD records of a run: does step divergence flag cascading tool errors?

``python -m verl_sod.report RUN_DIR [--out DIR] [--right-threshold 1.0] [--title T]`` reads
``RUN_DIR/sod_steps/step_*.jsonl`` and writes PNG figures, ``report.md`` and ``summary.json``.
See ``docs/report.md``.
"""

from verl_sod.report.records import ReportError, load_records

__all__ = ["ReportError", "load_records"]
