"""Broken configs stop before Ray starts, with the fix in the message; the launcher composes presets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import TEACHER_OVERRIDES, model_overrides

from verl_sod.preflight import ConfigError, preflight
from verl_sod.presets import available_presets, compose
from verl_sod.tiny import assets

TEACHER = TEACHER_OVERRIDES


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Local student and teacher dirs sharing a tokenizer, plus a teacher with a different one."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERL_SOD_CACHE", str(root))
        student = assets.build_model(assets.STUDENT)
        teacher = assets.build_model(assets.TEACHER)
        other = root / "other-tokenizer"
        tok = assets.build_tokenizer()
        tok.add_tokens(["<extra_token>"])
        tok.save_pretrained(other)
        shutil.copy(teacher / "config.json", other / "config.json")  # a model dir, another vocabulary
    data = root / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": "1+1?"}]}]), data)
    return {"student": str(student), "teacher": str(teacher), "other": str(other), "data": str(data)}


def _paths(models, teacher="teacher"):
    """Student, data and a GPU attention that needs no flash-attn; then the teacher."""
    return model_overrides(models["student"], models["data"], models[teacher])


def test_valid_presets_pass(models):
    preflight(compose("sod", [*TEACHER, *_paths(models)]))
    preflight(compose("grpo", _paths(models)[:-1]))
    preflight(compose("dapo", ["actor_rollout_ref.rollout.response_length=8192", *_paths(models)[:-1]]))


def test_teacher_with_another_tokenizer_names_both(models):
    cfg = compose("sod", [*TEACHER, *_paths(models, teacher="other")])
    with pytest.raises(ConfigError, match="different tokenizers") as err:
        preflight(cfg)
    assert models["other"] in str(err.value) and models["student"] in str(err.value)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_missing_model_path(models, which):
    paths = _paths(models)
    index = 0 if which == "student" else -1
    paths[index] = paths[index].split("=")[0] + "=/no/such/model"
    with pytest.raises(ConfigError, match="/no/such/model: no such directory"):
        preflight(compose("sod", [*TEACHER, *paths]))


def test_sod_without_distillation():
    cfg = compose("grpo", ["distillation.distillation_loss.loss_mode=sod"])
    with pytest.raises(ConfigError, match="preset=sod"):
        preflight(cfg)


def test_sod_out_of_range_hyperparameter():
    cfg = compose("sod", [*TEACHER, "distillation.distillation_loss.sod_delta=-0.5"])
    with pytest.raises(ConfigError, match="sod_delta must be >= 0"):
        preflight(cfg)


def test_teacher_pool_mismatch():
    cfg = compose(
        "sod", [*TEACHER, "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=2"]
    )
    with pytest.raises(ConfigError, match="distillation"):
        preflight(cfg)


def test_overlong_buffer_longer_than_response():
    cfg = compose("dapo", ["actor_rollout_ref.rollout.response_length=512"])
    with pytest.raises(ConfigError, match=r"overlong_buffer_cfg.len=4096 .* max_resp_len=512"):
        preflight(cfg)


def test_every_preset_yaml_starts_with_its_launch_command():
    folder = resources.files("verl_sod.config")
    files = [folder / "verl_sod.yaml"] + [folder / "preset" / f"{p}.yaml" for p in available_presets()]
    for path in files:
        head = path.read_text().splitlines()[:4]
        assert any(line.startswith("# Launch: python -m verl_sod.train") for line in head), path


def _launch(*args):
    cmd = [sys.executable, "-m", "verl_sod.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_launcher_prints_a_composed_preset():
    proc = _launch("preset=dapo", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "clip_ratio_high: 0.28" in proc.stdout and "adv_estimator: grpo" in proc.stdout


def test_launcher_composes_the_sod_loss_node_from_any_directory(tmp_path):
    """preset/sod.yaml composes ``sod_loss/defaults`` from hydra's ConfigStore, which the launcher fills."""
    cmd = [sys.executable, "-m", "verl_sod.train", "preset=sod", "--cfg", "job"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sod_delta: 0.2" in proc.stdout and "loss_mode: sod" in proc.stdout


def test_launcher_import_registers_the_sod_loss(tmp_path):
    """Importing the launcher must not break verl's plugin load of verl_sod.register (import order)."""
    code = (
        "import verl_sod.train\n"
        "from verl.trainer.distillation.losses import DISTILLATION_LOSS_REGISTRY as R\n"
        "assert 'sod' in R, sorted(R)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("first", ["verl_sod.config", "verl_sod.presets", "verl_sod.train"])
def test_every_config_entry_point_leaves_the_sod_loss_registered(first):
    """A fresh interpreter whose first verl_sod import is ``first`` still has verl's `sod` loss."""
    code = (
        f"import importlib; importlib.import_module({first!r}); "
        "import verl_sod.presets as p; p.compose('sod'); "
        "from verl.trainer.distillation.losses import get_distillation_loss_fn as g; "
        "g('sod'); print('REGISTERED')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "REGISTERED" in proc.stdout, proc.stderr[-2000:]


def test_launcher_rejects_an_unknown_preset_before_starting_anything():
    proc = _launch("preset=ppo2")
    assert proc.returncode != 0
    assert "ppo2" in proc.stderr and "Available options" in proc.stderr
    out = proc.stdout + proc.stderr
    assert "Started a local Ray instance" not in out and "ray init kwargs" not in out


def test_launcher_stops_a_broken_config_before_ray():
    proc = _launch("preset=grpo", "distillation.distillation_loss.loss_mode=sod")
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr and "preset=sod" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


RECIPE_ARGS = ["--config-dir", "recipes/sod", "--config-name", "sod"]


def test_check_stops_a_recipe_without_its_required_keys_in_one_line():
    proc = _launch(*RECIPE_ARGS, "--check")
    assert proc.returncode == 1, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ConfigError: ") and " is required by " in last and "recipes/sod/sod.yaml" in last
    assert any(key in last for key in ("data.train_files", "data.val_files", "teacher_model.model_path"))
    assert "Traceback" not in proc.stderr and "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_check_prints_the_resolved_config_and_what_would_run(models):
    cpu = [p for p in _paths(models) if "attn_implementation" not in p]  # platform=cpu sets eager
    proc = _launch("preset=sod", "platform=cpu", "--check", *cpu)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train_files: {models['data']}" in proc.stdout  # the resolved config
    assert "What would run:" in proc.stdout and "loss_mode=sod" in proc.stdout
    assert f"data.train_files: {models['data']} (1 rows)" in proc.stdout
    assert "Preflight passed" in proc.stdout
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
