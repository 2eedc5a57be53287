"""verl-sod: step-wise on-policy distillation (SOD), OPD, GRPO and DAPO on verl 0.9.1.

Importing ``verl_sod`` is cheap and does not import verl; verl loads the registrations in
:mod:`verl_sod.register` itself through its ``verl.plugins`` entry point.
"""

from verl_sod.algos.sod_weights import SODStepStats, compute_sod_weights, sod_step_stats

__all__ = ["SODStepStats", "compute_sod_weights", "sod_step_stats"]
__version__ = "0.1.0"
