"""Evaluation: pure metrics, verl validation-dump reading and re-scoring, and ``python -m verl_sod.eval``.

See docs/evaluation.md. ``metrics`` has no dependency beyond the standard library.
"""

from verl_sod.eval.metrics import Sample, avg_at_k, maj_at_k, pass_at_k, pass_at_k_curve, summarize

__all__ = ["Sample", "avg_at_k", "maj_at_k", "pass_at_k", "pass_at_k_curve", "summarize"]
