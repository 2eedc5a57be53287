"""The paper recipes' launch lines as a table, and hydra composition of one line (shared by the recipe tests).

Every YAML under ``recipes/`` and ``verl_sod/config/recipes/student/`` opens with a ``# Launch:`` command;
:data:`TABLE` holds one :class:`Row` per such file with what its command must compose to.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
STUDENTS = REPO / "verl_sod/config/recipes/student"
RL = "verl_sod.train"
SFT = "verl.trainer.sft_trainer"
DUMMY = "/nonexistent/dummy"
Q06, Q17 = "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"


@dataclass(frozen=True)
class Row:
    """One file with a launch line and what that launch line must compose to."""

    file: str
    entry: str
    algo: str
    student: str = Q06
    engine: str = "dp"
    pool: tuple[int, int] = (1, 8)  # trainer.nnodes, trainer.n_gpus_per_node
    teacher_pool: tuple[int, int] | None = None  # distillation.nnodes, n_gpus_per_node
    platform: str = "gpu"


TEACHER = (1, 8)
TABLE = [
    Row("recipes/grpo/grpo.yaml", RL, "grpo"),
    Row("recipes/dapo/dapo.yaml", RL, "dapo"),
    Row("recipes/opd/opd.yaml", RL, "opd", teacher_pool=TEACHER),
    Row("recipes/sod/sod.yaml", RL, "sod", teacher_pool=TEACHER),
    Row("recipes/sod/sod_megatron.yaml", RL, "sod", engine="megatron", teacher_pool=TEACHER),
    Row("recipes/sft/sft.yaml", SFT, "sft"),
    Row("recipes/sft/platform/gpu.yaml", SFT, "sft"),
    Row("recipes/sft/platform/cpu.yaml", SFT, "sft", DUMMY, pool=(1, 1), platform="cpu"),
    Row("verl_sod/config/recipes/student/qwen3-0.6b.yaml", RL, "sod", teacher_pool=TEACHER),
    Row("verl_sod/config/recipes/student/qwen3-1.7b.yaml", RL, "sod", Q17, teacher_pool=TEACHER),
]
RL_ROWS = [row for row in TABLE if row.entry == RL]


def row_id(row: Row) -> str:
    return row.file.removeprefix("verl_sod/config/")


def _launch_line(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Launch: "), f"{path}: first line must be a '# Launch:' comment"
    return first.removeprefix("# Launch: ")


def _parse_launch(path: Path) -> tuple[str, Path, str, list[str]]:
    """(entry module, config dir, config name, overrides with placeholders filled)."""
    tokens = shlex.split(_launch_line(path))
    entry = tokens[tokens.index("-m") + 1]
    config_dir = REPO / tokens[tokens.index("--config-dir") + 1]
    config_name = tokens[tokens.index("--config-name") + 1]
    overrides = []
    for tok in tokens[tokens.index("--config-name") + 2 :]:
        assert "=" in tok and not tok.startswith("+"), f"{path}: unexpected launch token {tok!r}"
        key, value = tok.split("=", 1)
        value = value.replace("$PWD", str(REPO))
        overrides.append(f"{key}={DUMMY if value == '...' else value}")
    return entry, config_dir, config_name, overrides


def compose_launch(row: Row, extra: list[str] | None = None):
    """(entry, composed config) for the launch line of ``row.file`` plus ``extra`` overrides."""
    entry, config_dir, config_name, overrides = _parse_launch(REPO / row.file)
    assert config_dir.is_dir(), f"{row.file}: --config-dir {config_dir} does not exist"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=config_name, overrides=[*overrides, *(extra or [])])
    return entry, cfg
