"""The ``megatron`` extra installs what verl 0.9.1's Megatron engine imports.

verl's Megatron engine (``verl/workers/engine/megatron``, ``verl/models/mcore``, ``verl/utils/megatron*``)
is read with ``ast``: every third-party package it imports must be either installed by verl-sod's base
dependencies, listed in pyproject's ``megatron`` extra (through :data:`DISTRIBUTIONS`), or named in
:data:`NOT_NEEDED` with the reason the SOD Megatron recipe never reaches that import. The recipe itself
composing into verl's McoreActorConfig: tests/test_recipes_verl_checks_on_cpu.py.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import tomllib
import verl
from packaging.requirements import Requirement

VERL = Path(verl.__file__).parent
REPO = Path(__file__).resolve().parents[1]
ENGINE_SOURCES = ["workers/engine/megatron", "models/mcore", "utils/megatron", "utils/megatron_utils.py"]

#: imported module -> the PyPI distribution that provides it
DISTRIBUTIONS = {
    "megatron.core": "megatron-core",
    "megatron.bridge": "megatron-bridge",
    "transformer_engine": "transformer-engine",
}
#: imports the recipe's path does not reach, and why
NOT_NEEDED = {
    "mbridge": "the older bridge, only with megatron.vanilla_mbridge=true (default: megatron.bridge)",
    "flash_attn": "only verl/utils/megatron helpers the engine does not call (attention: Transformer Engine)",
    "mindspeed": "Ascend NPUs only",
    "multistorageclient": "only for checkpoints on multi-storage-client URLs",
}


def _root(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "megatron" else parts[0]


def engine_imports() -> set[str]:
    files = []
    for rel in ENGINE_SOURCES:
        path = VERL / rel
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    roots = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                roots |= {_root(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(_root(node.module))
    return {r for r in roots if r.split(".")[0] not in sys.stdlib_module_names and r.split(".")[0] != "verl"}


def _installed_here(root: str) -> bool:
    try:
        return importlib.util.find_spec(root) is not None
    except ModuleNotFoundError:
        return False


def _extra(name: str) -> set[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {Requirement(r).name for r in extras[name]}


def test_the_megatron_extra_lists_what_verls_megatron_engine_imports():
    imports = engine_imports()
    assert set(DISTRIBUTIONS) <= imports  # the scan sees the engine's real imports
    needed = {r for r in imports - set(NOT_NEEDED) if not _installed_here(r) or r in DISTRIBUTIONS}
    unknown = needed - set(DISTRIBUTIONS)
    assert not unknown, (
        f"verl's Megatron engine imports {sorted(unknown)}: add them to DISTRIBUTIONS and the extra"
    )
    missing = {DISTRIBUTIONS[r] for r in needed} - _extra("megatron")
    assert not missing, f"pyproject's megatron extra lacks {sorted(missing)}"


def test_the_megatron_extra_avoids_verls_unpublished_pin():
    """verl[megatron]==0.9.1 pins megatron-bridge==0.5.2, a version PyPI does not have (0.5.1, 0.6.0, ...)."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    reqs = [Requirement(r) for r in extras["megatron"]]
    assert not any(r.name == "verl" and "megatron" in r.extras for r in reqs)
    (bridge,) = [r for r in reqs if r.name == "megatron-bridge"]
    assert not bridge.specifier.contains("0.5.2") and bridge.specifier.contains("0.6.2")
