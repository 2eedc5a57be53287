"""Rewards for the SOD benchmarks: math (math-verify), GPQA letters and code tests.

``verl_sod.rewards.compute_score`` has verl's custom reward signature; set
``reward.custom_reward_function.path=pkg://verl_sod.rewards`` and ``name=compute_score``.
Routes, options and formats: docs/rewards-and-data.md.
"""

from verl_sod.rewards.router import OPTIONS, authors_shaped_score, compute_score, route_for

__all__ = ["OPTIONS", "authors_shaped_score", "compute_score", "route_for"]
