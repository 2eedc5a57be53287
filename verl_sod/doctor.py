"""``python -m verl_sod doctor``: prove verl loaded verl_sod's registrations.

verl imports plugins from the ``verl.plugins`` entry-point group on ``import verl`` and swallows
their import errors; a broken plugin then only surfaces later as "Unsupported loss mode". The
doctor imports verl the way every Ray worker does, then checks each expected registration and,
when the plugin failed, re-imports it directly to show the real traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import traceback
from collections.abc import Callable

PLUGIN_MODULE = "verl_sod.register"


def _registries() -> dict[str, Callable[[], set[str]]]:
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.plugin.platform.platform_manager import PlatformRegistry
    from verl.trainer.distillation.losses import DISTILLATION_LOSS_REGISTRY
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return {
        "distillation_loss": lambda: set(DISTILLATION_LOSS_REGISTRY),
        "platform": lambda: set(PlatformRegistry.registered_names()),
        "rollout_replica": lambda: set(RolloutReplicaRegistry._registry),
        "rollout_adapter": lambda: {name for name, _mode in rollout_base._ROLLOUT_REGISTRY},
        "agent_loop": lambda: set(_agent_loop_registry),
        "trainer": lambda: set(TRAINER_REGISTRY),
    }


def _entry_point_status() -> tuple[bool, str]:
    eps = [ep for ep in md.entry_points(group="verl.plugins") if ep.value == PLUGIN_MODULE]
    if not eps:
        return False, (
            f"no `verl.plugins` entry point for {PLUGIN_MODULE}: install the package "
            "(`make install`, or `pip install -e .`) in the environment every Ray worker uses"
        )
    policy = os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and eps[0].name not in policy.split(",")):
        return (
            False,
            f"VERL_USE_EXTERNAL_PLUGINS={policy!r} stops verl from loading entry point {eps[0].name!r}",
        )
    return True, f"entry point {eps[0].name} = {PLUGIN_MODULE}"


def _bfcl_layout(out: Callable[[str], None]) -> list[str]:
    """The pinned bfcl-eval and the files the BFCL task reads (``verl_sod.tasks.bfcl.package``)."""
    from verl_sod.tasks.bfcl.package import BFCLLayoutError, check_layout

    try:
        for line in check_layout():
            out(f"  [ok] bfcl: {line}")
    except BFCLLayoutError as exc:
        out(f"  [MISSING] bfcl: {exc}")
        return [f"bfcl-eval: {exc}"]
    return []


def run_doctor(out: Callable[[str], None] = print) -> int:
    """Print the report; return 0 when everything expected is registered, else 1."""
    import verl  # loads the plugins exactly as a Ray worker does

    problems: list[str] = []
    out(f"verl {verl.__version__} ({os.path.dirname(verl.__file__)})")
    from verl.plugin.platform.platform_manager import PlatformRegistry

    chosen = os.getenv("VERL_PLATFORM", "").strip() or "auto-detect (VERL_PLATFORM unset)"
    out(f"platform: {chosen}; registered platforms: {', '.join(PlatformRegistry.registered_names())}")
    ep_ok, ep_msg = _entry_point_status()
    out(f"plugin: {ep_msg}")
    if not ep_ok:
        problems.append(ep_msg)
    if PLUGIN_MODULE not in sys.modules:
        problems.append(f"`import verl` did not load {PLUGIN_MODULE}")
        try:
            importlib.import_module(PLUGIN_MODULE)
        except Exception:
            problems.append("importing it directly fails:\n" + traceback.format_exc())
    expected: tuple[tuple[str, str], ...] = getattr(sys.modules.get(PLUGIN_MODULE), "EXPECTED", ())
    if not expected:
        problems.append(f"{PLUGIN_MODULE}.EXPECTED is unavailable: nothing could be checked")
    registries = _registries()
    for registry, name in expected:
        present = name in registries[registry]()
        out(f"  [{'ok' if present else 'MISSING'}] {registry}: {name}")
        if not present:
            problems.append(f"{registry} {name!r} is not registered")
    from verl_sod.presets import available_presets

    out(f"presets: {', '.join(available_presets())}")
    problems.extend(_bfcl_layout(out))
    for problem in problems:
        out(f"PROBLEM: {problem}")
    out("doctor: OK" if not problems else f"doctor: {len(problems)} problem(s)")
    return 0 if not problems else 1
