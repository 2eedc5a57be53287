"""Interruption: an SOD run killed mid-step resumes from verl's checkpoint with continuous records.

The unit tests cover :mod:`verl_sod.resume` (verl's file logger truncates its file on a restart;
the launcher keeps the steps before the checkpoint, one entry per step). The e2e test sends a real
SIGTERM to a 4-step SOD run while it is in step 3 (after step 3's records were written, before its
checkpoint), resumes it with ``trainer.resume_mode=auto``, and checks steps, records and weights.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from verl_sod.resume import HISTORY_SUFFIX, merge_by_step, read_entries, resume_step, resumed_metrics

TESTS = Path(__file__).resolve().parent


def _write(path: Path, steps: list[int], tag: str) -> None:
    path.write_text(
        "".join(json.dumps({"step": s, "data": {"tag": tag, f"only_{tag}": s}}) + "\n" for s in steps)
    )


def _config(tmp_path: Path, mode: str = "auto", path: str | None = None):
    trainer = {"resume_mode": mode, "default_local_dir": str(tmp_path / "ckpt"), "resume_from_path": path}
    return OmegaConf.create({"trainer": trainer})


def test_resume_step_follows_verls_lookup(tmp_path):
    assert resume_step(_config(tmp_path)) is None  # no checkpoint: a fresh run
    (tmp_path / "ckpt" / "global_step_2").mkdir(parents=True)
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    assert resume_step(_config(tmp_path)) == 2
    assert resume_step(_config(tmp_path, "disable")) is None
    assert resume_step(_config(tmp_path, "resume_path", "/x/global_step_7")) == 7


def test_merge_keeps_one_entry_per_step_later_values_win():
    entries = [
        {"step": 2, "data": {"a": 1, "b": 1}},
        {"step": 1, "data": {"a": 0}},
        {"step": 2, "data": {"b": 2}},
    ]
    assert merge_by_step(entries) == [{"step": 1, "data": {"a": 0}}, {"step": 2, "data": {"a": 1, "b": 2}}]


def test_resumed_metrics_keeps_steps_before_the_checkpoint(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics))
    _write(metrics, [1, 2, 3], "first")  # killed during step 4, after step 3 was logged
    with metrics.open("a") as f:
        f.write('{"step": 4, "da')  # and half a line
    (tmp_path / "ckpt" / "global_step_2").mkdir(parents=True)
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    with resumed_metrics(_config(tmp_path)) as step:
        assert step == 2
        _write(metrics, [2, 3, 4], "resumed")  # verl truncates and logs val at 2, then 3 and 4
    entries = read_entries(metrics)
    assert [e["step"] for e in entries] == [1, 2, 3, 4]
    assert entries[1]["data"] == {"tag": "resumed", "only_first": 2, "only_resumed": 2}  # merged at step 2
    assert entries[2]["data"] == {"tag": "resumed", "only_resumed": 3}  # step 3 ran again: old values dropped
    assert not (tmp_path / ("metrics.jsonl" + HISTORY_SUFFIX)).exists()


def test_a_launcher_killed_again_keeps_its_history(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics))
    _write(metrics, [1, 2], "first")
    (tmp_path / "ckpt" / "global_step_2").mkdir(parents=True)
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    context = resumed_metrics(_config(tmp_path))
    context.__enter__()  # the launcher dies inside the run: no __exit__
    _write(metrics, [2, 3], "second")
    with resumed_metrics(_config(tmp_path)):
        _write(metrics, [2, 3, 4], "third")
    assert [e["step"] for e in read_entries(metrics)] == [1, 2, 3, 4]
    assert read_entries(metrics)[0]["data"]["tag"] == "first"


def test_a_fresh_run_drops_a_stale_history(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics))
    history = tmp_path / ("metrics.jsonl" + HISTORY_SUFFIX)
    _write(history, [1, 2], "stale")
    with resumed_metrics(_config(tmp_path)) as step:
        assert step is None
    assert not history.exists()


# ---------------------------------------------------------------- end to end
SMALL = [
    "data.train_batch_size=8",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
]


def _actor_state(folder: Path) -> dict[str, torch.Tensor]:
    """The actor weights of one checkpoint (verl's FSDP shard of rank 0; the CPU runs use one rank)."""
    import torch.distributed as dist

    if not dist.is_initialized():  # DTensors in the shard unpickle onto a device mesh
        dist.init_process_group("gloo", init_method=f"file://{folder.parent}/.pg", rank=0, world_size=1)
    (shard,) = sorted((folder / "actor").glob("model_world_size_1_rank_0.pt"))
    state = torch.load(shard, map_location="cpu", weights_only=False)
    return {k: (v.to_local() if hasattr(v, "to_local") else v).detach().clone() for k, v in state.items()}


def _kill_in_step_3(run_dir: Path):
    """on_start hook: SIGTERM the run's process group once step 3's records exist (mid-step 3)."""

    def start(proc):
        def watch():
            records = run_dir / "sod_steps" / "step_000003.jsonl"
            while proc.poll() is None:
                if records.exists():
                    os.killpg(proc.pid, signal.SIGTERM)
                    return
                threading.Event().wait(0.2)  # polling interval only; no outcome depends on it

        threading.Thread(target=watch, daemon=True).start()

    return start


@pytest.mark.e2e
def test_sod_run_killed_in_step_3_resumes_to_step_4(tmp_path):
    from verl_sod.runner import run_cpu_training

    run_dir = tmp_path / "sod"
    ckpt = run_dir / "ckpt"
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "VERL_USE_EXTERNAL_MODULES": "resume_probe",
        "VERL_SOD_RESUME_PROBE_DIR": str(tmp_path / "probe"),
    }
    extra = [
        *SMALL,
        "trainer.save_freq=2",  # checkpoints at steps 2 and 4: a kill in step 3 resumes from step 2
        f"trainer.default_local_dir={ckpt}",
        "trainer.resume_mode=auto",
        "trainer.v1.trainer_mode=sod_sync_resume_probe",
    ]
    first = run_cpu_training(
        "sod", run_dir, steps=4, echo=False, extra=extra, env=env, on_start=_kill_in_step_3(run_dir)
    )
    log = first.log_path.read_text()[-3000:]
    assert first.returncode != 0, "the run was not interrupted: " + log
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2", log
    assert not (ckpt / "global_step_3").exists()
    saved = _actor_state(ckpt / "global_step_2")

    second = run_cpu_training("sod", run_dir, steps=4, echo=False, extra=extra, env=env, keep_metrics=True)
    log = second.log_path.read_text()
    assert second.returncode == 0, log[-4000:]
    assert "global_step_2" in log and (ckpt / "global_step_4").exists()
    steps = [m["step"] for m in read_entries(run_dir / "metrics.jsonl")]
    assert [s for s in steps if s > 0] == [1, 2, 3, 4], steps
    for step in (1, 2, 3, 4):
        lines = (run_dir / "sod_steps" / f"step_{step:06d}.jsonl").read_text().splitlines()
        uids = [json.loads(line)["uid"] for line in lines]
        assert len(uids) == len(set(uids)) == 32, (step, len(uids))
    assert sorted(p.name for p in (run_dir / "sod_steps").iterdir()) == [
        f"step_{s:06d}.jsonl" for s in (1, 2, 3, 4)
    ]
    loaded = _actor_state(tmp_path / "probe" / "global_step_2")
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    final = _actor_state(ckpt / "global_step_4")
    assert any(not torch.equal(value, final[key]) for key, value in saved.items())  # steps 3-4 trained
