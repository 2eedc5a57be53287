"""Multi-node, exercised: one SOD step of the CPU-scaled paper recipe on a simulated Ray cluster.

Ray's own ``ray.cluster_utils.Cluster`` starts three nodes on this machine (a GCS/raylet each),
one logical GPU per node: two for the student's pool (``trainer.nnodes=2``,
``trainer.n_gpus_per_node=1``: FSDP world size 2, one worker per node) and one for the teacher's
own pool (verl 0.9.1 requires ``distillation.nnodes > 0``). The launch is what a cluster user
runs on the head node: ``RAY_ADDRESS=... python -m verl_sod.train --config-dir recipes/sod
--config-name sod ...`` with the nodes' own resources (``num_cpus``/``num_gpus`` null).
"""

from __future__ import annotations

import json
import math

import pytest

from verl_sod.runner import run_cpu_training

pytestmark = pytest.mark.e2e

SMALL = [
    "data.train_batch_size=8",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
]
TWO_NODES = [
    "trainer.nnodes=2",
    "trainer.n_gpus_per_node=1",
    "distillation.nnodes=1",
    "distillation.n_gpus_per_node=1",
    "ray_kwargs.ray_init.num_cpus=null",
    "ray_kwargs.ray_init.num_gpus=null",
]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 12, "num_gpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=12, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _actors_by_class(address: str) -> dict[str, list[str]]:
    """Node ids of every actor the run created (dead ones included), by actor class name."""
    import ray
    from ray._private import state

    ray.init(address=address, logging_level="ERROR")
    try:
        out: dict[str, list[str]] = {}
        for actor in state.actors().values():
            name = actor["ActorClassName"].rsplit(".", 1)[-1]
            out.setdefault(name, []).append(actor["Address"]["NodeID"])
        return out
    finally:
        ray.shutdown()


def test_one_sod_step_of_the_recipe_on_two_trainer_nodes(cluster, tmp_path):
    assert len(cluster.list_all_nodes()) == 3
    result = run_cpu_training(
        "sod",
        tmp_path / "sod",
        steps=1,
        validate=False,
        echo=False,
        extra=SMALL + TWO_NODES,
        recipe=True,
        env={"RAY_ADDRESS": cluster.address},
    )
    tail = result.log_path.read_text()[-4000:] if result.log_path else ""
    assert result.returncode == 0, tail
    assert "Connecting to existing Ray cluster" in result.log_path.read_text(), tail
    (step1,) = [m["data"] for m in result.metrics if m["step"] == 1]
    assert math.isfinite(step1["actor/grad_norm"]) and step1["actor/grad_norm"] > 0
    assert step1["actor/sod/explicit_step_ids"] == 1.0 and "actor/distillation/loss" in step1
    records = (tmp_path / "sod" / "sod_steps" / "step_000001.jsonl").read_text().splitlines()
    assert len(records) == 32 and all(json.loads(r)["steps"] is not None for r in records)

    actors = _actors_by_class(cluster.address)
    trainer_nodes = actors.get("WorkerDict", [])
    assert len(trainer_nodes) == 2 and len(set(trainer_nodes)) == 2, actors  # one FSDP rank per node
    used = {node for ids in actors.values() for node in ids}
    assert len(used) == 3, actors  # the teacher's pool took the third node
