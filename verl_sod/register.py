"""The one import hub that registers everything verl_sod adds to verl.

verl loads it on every ``import verl`` through the ``verl.plugins`` entry point (see
``pyproject.toml``), in the driver and in every Ray worker. verl swallows plugin import errors
(logged at DEBUG only), so :data:`EXPECTED` lists what must be registered and
``python -m verl_sod doctor`` checks it loudly.

Keep this module to registrations: it runs while ``verl/__init__`` is still executing.
"""

from __future__ import annotations

from verl_sod.algos import sod_loss

# (registry, name) pairs verl_sod must have registered once this module is imported.
EXPECTED: tuple[tuple[str, str], ...] = (("distillation_loss", sod_loss.SOD_LOSS_NAME),)
