"""The package structure: one schema, layers that only import downwards, no import circle.

Every ``import`` of a ``verl_sod`` module (module level or inside a function) is read from the source
with :mod:`ast`; a unit is a sub-package of ``verl_sod`` (``verl_sod.algos``) or a top-level module
(``verl_sod.runner``). Tests and benchmarks import no ``test_*`` module: shared builders live in
tests/helpers.py, tests/builders.py, tests/scripted_agent.py and tests/oracle.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "verl_sod"
TESTS = PACKAGE.parent / "tests"

# Lower layers first; a unit may import units of its own layer or of lower ones only.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"fields"}),
    frozenset({"algos", "sandbox", "tiny", "report", "cpu"}),
    frozenset({"agent", "rewards", "tools", "diagnostics", "config"}),
    frozenset({"tasks", "data", "presets"}),
    frozenset({"runner", "eval", "study"}),
    frozenset({"demo", "preflight", "doctor", "summary", "resume"}),
    frozenset({"register", "train", "__main__", "__init__"}),
)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every verl_sod module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("verl_sod")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("verl_sod"):
            # ``from pkg import submodule`` depends on the submodule; any other name, on ``pkg`` itself
            subs = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            found |= subs
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def _is_module(name: str) -> bool:
    """``verl_sod.a.b`` names a file or package of the tree (not a function or a constant)."""
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = _unit(_module_name(path))
        targets = {_unit(m) for m in _imports(path) if m.count(".") >= 1 or m == "verl_sod"}
        graph.setdefault(src, set()).update(t for t in targets if t != src)
    return graph


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"unit verl_sod.{unit} is in no layer of {__name__}.LAYERS: add it")


def test_every_unit_has_a_layer():
    for unit in _graph():
        _layer(unit)


def test_no_import_runs_upwards():
    upward = [
        f"verl_sod.{src} (layer {_layer(src)}) imports verl_sod.{dst} (layer {_layer(dst)})"
        for src, dsts in sorted(_graph().items())
        for dst in sorted(dsts)
        if dst in {u for layer in LAYERS for u in layer} and _layer(dst) > _layer(src)
    ]
    assert not upward, "\n".join(upward)


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    """Depth-first search; the first circle found is the failure message."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_import_circle_between_units():
    graph = _graph()
    _assert_acyclic(graph)


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = _module_name(path)
        graph[src] = {m for m in _imports(path) if _is_module(m) and m != src}
    return graph


def test_no_import_circle_between_modules():
    """Inside a package too: no module imports one that (indirectly) imports it back."""
    graph = _module_graph()
    _assert_acyclic(graph)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("verl_sod"):
                bad += [
                    f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not _is_module(f"{node.module}.{a.name}")
                ]
    assert not bad, bad


def test_algos_import_only_the_schema():
    """The algorithm layer knows no agent loop, platform, task or evaluation."""
    algos = {
        m
        for path in (PACKAGE / "algos").rglob("*.py")
        for m in _imports(path)
        if not m.startswith(("verl_sod.algos", "verl_sod.fields"))
    }
    assert not algos, algos


def test_eval_and_runner_name_no_task():
    """Tasks are found through the tasks home (``verl_sod.tasks``), never named by eval or the runner."""
    for unit in ("eval", "runner.py", "cpu"):
        paths = [PACKAGE / unit] if unit.endswith(".py") else list((PACKAGE / unit).rglob("*.py"))
        named = {m for p in paths for m in _imports(p) if m.startswith("verl_sod.tasks.")}
        assert not named, (unit, named)


SCHEMA_LITERALS = (
    "sod_step_ids",
    "sod_step_outcomes",
    "sod_tool_stats",
    "sod_step_weights",
    "sod_steps",
    "sod_agent",
)


@pytest.mark.parametrize("literal", SCHEMA_LITERALS)
def test_schema_names_are_written_once(literal):
    """Each schema name is spelled as a string literal only in verl_sod/fields.py."""
    pattern = re.compile(rf"[\"']{re.escape(literal)}[\"']")
    where = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "fields.py" and pattern.search(p.read_text())
    ]
    assert not where, f"{literal!r} also spelled in {where}; import it from verl_sod.fields"


def _schema_tuples() -> dict[str, frozenset[str]]:
    from verl_sod import fields

    return {
        name: frozenset(value)
        for name, value in vars(fields).items()
        if name.isupper() and isinstance(value, tuple) and len(value) >= 3
    }


def test_no_second_copy_of_a_schema_tuple():
    """No module re-declares a schema tuple (statuses, outcomes, counters, patterns) as literals."""
    wanted = _schema_tuples()
    copies = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "fields.py":
            continue
        tree = ast.parse(path.read_text())
        # Literal["ok", ...] type arguments must be literals; they are checked against fields below
        literal_args = {
            id(n.slice)
            for n in ast.walk(tree)
            if isinstance(n, ast.Subscript) and ast.unparse(n.value) == "Literal"
        }
        for node in ast.walk(tree):
            if id(node) in literal_args:
                continue
            if isinstance(node, ast.Tuple | ast.List | ast.Set) and all(
                isinstance(e, ast.Constant) for e in node.elts
            ):
                values = frozenset(e.value for e in node.elts)
                copies += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} copies {n}"
                    for n, v in wanted.items()
                    if v <= values
                ]
    assert not copies, copies


def test_sandbox_status_type_matches_the_schema():
    from typing import get_args

    from verl_sod.fields import SANDBOX_STATUSES
    from verl_sod.sandbox.result import Status

    assert get_args(Status) == SANDBOX_STATUSES


def test_the_layer_rule_can_fail():
    """The checks above see imports inside functions too (the cheap way to hide a cycle)."""
    source = "def f():\n    from verl_sod.agent.loop import AGENT_NAME\n"
    path = PACKAGE.parent / "tests" / "_layer_probe_tmp.py"
    try:
        path.write_text(source)
        assert "verl_sod.agent.loop" in _imports(path)
    finally:
        path.unlink()


def _test_modules_imported(path: Path) -> set[str]:
    """The ``tests/test_*.py`` modules ``path`` imports (by their file's stem), anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):  # ``from tests import test_x`` names the module in the alias
            prefix = f"{node.module}." if node.module else ""
            names |= {node.module or ""} | {prefix + a.name for a in node.names}
    stems = {name.rsplit(".", 1)[-1] for name in names}
    return {s for s in stems if s.startswith("test_") and (TESTS / f"{s}.py").is_file()}


def test_no_test_module_imports_another_test_module():
    """A builder two test files need lives in a shared module, never in one of the test files."""
    paths = sorted([*TESTS.rglob("*.py"), *(PACKAGE.parent / "benchmarks").rglob("*.py")])
    found = [
        f"{p.relative_to(PACKAGE.parent)} imports {m}"
        for p in paths
        for m in sorted(_test_modules_imported(p))
    ]
    assert not found, "move the shared code to tests/helpers.py or tests/builders.py:\n" + "\n".join(found)


def test_the_test_import_rule_can_fail(tmp_path):
    """Module level, inside a function, through the ``tests`` package; names of other things pass."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import test_layers_on_cpu\n"
        "from tests import test_report_on_cpu\n"
        "def f():\n    from test_sod_loss_on_cpu import test_config_defaults_are_the_papers\n"
        "from helpers import TEACHER_OVERRIDES\nimport test_no_such_file_on_cpu\n"
    )
    assert _test_modules_imported(path) == {
        "test_layers_on_cpu",
        "test_report_on_cpu",
        "test_sod_loss_on_cpu",
    }
