"""Every data file the package reads at run time ships in a (non-editable) wheel."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "verl_sod"


def _shipped(patterns: list[str]) -> set[Path]:
    return {p for pattern in patterns for p in PKG.glob(pattern) if p.is_file()}


def test_every_non_python_file_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["verl_sod"]
    data = {
        p
        for p in PKG.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    missing = sorted(str(p.relative_to(ROOT)) for p in data - _shipped(patterns))
    assert data and not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
