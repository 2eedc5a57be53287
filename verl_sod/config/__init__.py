"""verl_sod's hydra configs (``pkg://verl_sod.config``) and the SOD loss node they compose.

Hydra imports this package when it opens the config source, before any config of it is composed,
so the node stored here is there for ``preset/sod.yaml``'s defaults list in every entry point
(``python -m verl_sod.train``, :func:`verl_sod.presets.compose`, the paper recipes).

``sod_loss/defaults`` is ``distillation.distillation_loss`` as SOD needs it: the ``_target_`` of
:class:`~verl_sod.algos.sod_config.SODDistillationLossConfig` and every field that class declares,
with the class's own defaults. The values are written once, in the dataclass; the YAML only names
the node, yet every key exists in the composed config, so ``distillation.distillation_loss.sod_delta=0.5``
works without ``+`` and a misspelt key is still an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import verl  # noqa: F401  (first: see below)
from hydra.core.config_store import ConfigStore

# verl is imported before the SOD config class: verl's plugin entry point imports verl_sod.register,
# whose `sod` loss imports that class. Importing the class first would import verl while the class's
# module is half-initialised; verl logs the plugin failure at DEBUG only and runs without `sod`.

SOD_LOSS_GROUP = "sod_loss"
SOD_LOSS_NODE = "defaults"


def sod_loss_node() -> dict[str, Any]:
    """``_target_`` plus each field SODDistillationLossConfig declares (not inherited), at its default."""
    from verl_sod.algos.sod_config import SODDistillationLossConfig

    cls = SODDistillationLossConfig
    own = set(cls.__annotations__)
    node: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for field in dataclasses.fields(cls):
        if field.name in own:
            if field.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__qualname__}.{field.name} needs a plain default to be a config key")
            node[field.name] = field.default
    return node


ConfigStore.instance().store(group=SOD_LOSS_GROUP, name=SOD_LOSS_NODE, node=sod_loss_node())
