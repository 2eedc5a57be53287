"""The installed ``bfcl-eval`` package: its pinned version, its files, and a layout check.

BFCL (the Berkeley Function-Calling Leaderboard) ships its multi-turn benchmark inside the PyPI
package ``bfcl-eval``. ``make install`` installs it with ``--no-deps`` (its declared dependencies
pin an old numpy and many provider SDKs this project does not use); the parts used here import only
the standard library and ``mpmath``. The pin lives in one place, ``requirements.txt`` next to this
module (the Makefile installs from it); :data:`PINNED_VERSION` is read from it.

:func:`check_layout` checks everything this task reads from the package and raises
:class:`BFCLLayoutError` naming the missing piece and the fix. Data preparation, the environment
and ``python -m verl_sod doctor`` call it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "bfcl-eval"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def _pinned_version() -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith(f"{PACKAGE}=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError(f"{REQUIREMENTS} has no `{PACKAGE}==VERSION` line")


PINNED_VERSION = _pinned_version()
FIX = f"install it with `pip install --no-deps {PACKAGE}=={PINNED_VERSION} mpmath` (or `make install`)"
#: the multi-turn categories this environment runs (memory and web search are left out)
CATEGORIES: tuple[str, ...] = ("base", "miss_func", "miss_param", "long_context")
#: the API classes of those categories
CLASSES: tuple[str, ...] = (
    "GorillaFileSystem",
    "MathAPI",
    "MessageAPI",
    "TwitterAPI",
    "TicketAPI",
    "TradingBot",
    "TravelAPI",
    "VehicleControlAPI",
)
_BACKEND_CONFIG = "bfcl_eval.constants.executable_backend_config"
_CHECKER = "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker"
_CHECKER_NAMES = ("state_checker", "response_checker")
_QUESTION_KEYS = ("id", "question", "initial_config", "involved_classes")


class BFCLLayoutError(RuntimeError):
    """The installed bfcl-eval is missing, another version, or laid out differently."""


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BFCLLayoutError(f"cannot import {name} ({exc}); {FIX}") from None


def package_dir() -> Path:
    """The installed ``bfcl_eval`` directory."""
    module = _import("bfcl_eval")
    if module.__file__ is None:
        raise BFCLLayoutError(f"bfcl_eval has no __init__.py (a namespace package?); {FIX}")
    return Path(module.__file__).resolve().parent


def data_dir() -> Path:
    return package_dir() / "data"


def question_file(category: str) -> Path:
    return data_dir() / f"BFCL_v4_multi_turn_{category}.json"


def answer_file(category: str) -> Path:
    return data_dir() / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json"


def backend_config() -> ModuleType:
    """``CLASS_FILE_PATH_MAPPING``, ``STATELESS_CLASSES``, ``MULTI_TURN_FUNC_DOC_FILE_MAPPING``."""
    return _import(_BACKEND_CONFIG)


def checker() -> ModuleType:
    """BFCL's multi-turn checker module (only its sub-checkers are called; see ``checker.py``)."""
    return _import(_CHECKER)


def api_class(name: str) -> type:
    """The simulated API class ``name`` (e.g. ``GorillaFileSystem``)."""
    mapping = backend_config().CLASS_FILE_PATH_MAPPING
    if name not in mapping:
        raise BFCLLayoutError(f"API class {name!r} is not in bfcl-eval's CLASS_FILE_PATH_MAPPING; {FIX}")
    return getattr(_import(mapping[name]), name)


@cache
def function_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    """BFCL's function docs of one API class (one JSON object per line in the package)."""
    doc_file = backend_config().MULTI_TURN_FUNC_DOC_FILE_MAPPING[class_name]
    path = data_dir() / "multi_turn_func_doc" / doc_file
    if not path.is_file():
        raise BFCLLayoutError(f"no function docs for {class_name} at {path}; {FIX}")
    with path.open(encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def installed_version() -> str | None:
    try:
        return md.version(PACKAGE)
    except md.PackageNotFoundError:
        return None


def check_layout() -> list[str]:
    """Check the installed package; return one line per thing checked, or raise BFCLLayoutError."""
    version = _checked_version()
    lines = [f"{PACKAGE} {version} at {package_dir()}"]
    config = backend_config()
    _check_code(config)
    _check_api_classes(config)
    for category in CATEGORIES:
        _check_data(category)
    lines.append(f"{len(CLASSES)} API classes, function docs, checker, data for {', '.join(CATEGORIES)}")
    return lines


def _checked_version() -> str:
    """The installed version, which must be the pinned one."""
    version = installed_version()
    if version is None:
        raise BFCLLayoutError(f"{PACKAGE} is not installed; {FIX}")
    if version != PINNED_VERSION:
        raise BFCLLayoutError(
            f"{PACKAGE} {version} is installed, this task is pinned to {PINNED_VERSION}; {FIX}"
        )
    return version


def _check_code(config: ModuleType) -> None:
    """The backend config's mappings and the checker's functions are there."""
    for attr in ("CLASS_FILE_PATH_MAPPING", "STATELESS_CLASSES", "MULTI_TURN_FUNC_DOC_FILE_MAPPING"):
        if not hasattr(config, attr):
            raise BFCLLayoutError(f"{_BACKEND_CONFIG} has no {attr}; {FIX}")
    module = checker()
    missing = [name for name in _CHECKER_NAMES if not callable(getattr(module, name, None))]
    if missing:
        raise BFCLLayoutError(f"{_CHECKER} lacks {missing}; {FIX}")


def _check_api_classes(config: ModuleType) -> None:
    """Every API class loads a scenario (unless stateless) and has function docs."""
    for name in CLASSES:
        cls = api_class(name)
        if name not in config.STATELESS_CLASSES and not callable(getattr(cls, "_load_scenario", None)):
            raise BFCLLayoutError(f"API class {name} has no _load_scenario; {FIX}")
        if not function_docs(name):
            raise BFCLLayoutError(f"no function docs for {name}; {FIX}")


def _check_data(category: str) -> None:
    """The category's question and answer files exist and its rows carry the keys used."""
    for path in (question_file(category), answer_file(category)):
        if not path.is_file():
            raise BFCLLayoutError(f"missing data file {path}; {FIX}")
    with question_file(category).open(encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    absent = [key for key in _QUESTION_KEYS if key not in first]
    if absent:
        raise BFCLLayoutError(f"{question_file(category).name} rows lack {absent}; {FIX}")
