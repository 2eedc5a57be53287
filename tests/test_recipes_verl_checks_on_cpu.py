"""Each RL recipe's sub-configs build as verl 0.9.1's dataclasses and pass verl's ``validate_config``.

For every RL row of :data:`recipe_table.TABLE`, each sub-config verl builds as a dataclass (actor,
ref with the worker's key renames, rollout, model, distillation with its teachers, the critic only when
verl would have one, and ``algorithm``'s typed schema) goes through verl's own
``omega_conf_to_dataclass``, so each ``__post_init__`` check runs; then
``verl.utils.config.validate_config`` (what ``verl.trainer.main_ppo.main`` calls first) runs with the
recipe's ``trainer.nnodes x n_gpus_per_node``. verl 0.9.1 has no dataclass for ``data`` or ``trainer``
itself (it reads them as DictConfigs): hydra's struct composition and ``validate_config`` check them.

Two of verl's GPU-count checks happen later, in the workers, and are restated here: the rollout's
world size must divide the student's pool (``verl/workers/engine_workers.py``), and Megatron's
tensor x pipeline x context parallel size must divide it (``validate_config`` checks that only
without dynamic batch sizes, which the recipes use).

The student is a hub id, which ``HFModelConfig`` would download: the model nodes are built with the
tiny local Qwen3 model as a stand-in path (the rest of the node is the recipe's).
"""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict
from recipe_table import RL_ROWS, Row, compose_launch, row_id
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config

from verl_sod.tiny import assets

#: ref keys verl renames before it builds the ref's ActorConfig (engine_workers.py, "build reference model")
REF_RENAMES = {
    "log_prob_micro_batch_size": "ppo_micro_batch_size",
    "log_prob_micro_batch_size_per_gpu": "ppo_micro_batch_size_per_gpu",
    "log_prob_use_dynamic_bsz": "use_dynamic_bsz",
    "log_prob_max_token_len_per_gpu": "ppo_max_token_len_per_gpu",
}


def _ref_as_the_worker_builds_it(cfg: DictConfig) -> DictConfig:
    ref = OmegaConf.create(OmegaConf.to_container(cfg.actor_rollout_ref.ref, resolve=True))
    with open_dict(ref):
        ref.ppo_mini_batch_size = cfg.actor_rollout_ref.actor.ppo_mini_batch_size
        for old, new in REF_RENAMES.items():
            ref[new] = ref.pop(old, False if new == "use_dynamic_bsz" else None)
    return ref


#: path -> the node verl builds there (where verl builds it, verl 0.9.1)
SUBCONFIGS = {
    # validate_config (verl/utils/config.py), the actor worker (verl/workers/engine_workers.py)
    "actor_rollout_ref.actor": lambda cfg: cfg.actor_rollout_ref.actor,
    # the ref worker, after its key renames (engine_workers.py, "build reference model")
    "actor_rollout_ref.ref": _ref_as_the_worker_builds_it,
    # engine_workers.py "build rollout engine", rollout/replica.py, agent_loop.py
    "actor_rollout_ref.rollout": lambda cfg: cfg.actor_rollout_ref.rollout,
    # HFModelConfig: engine_workers.py, agent_loop.py, v1 trainer_base.py
    "actor_rollout_ref.model": lambda cfg: cfg.actor_rollout_ref.model,
    # v1 trainer_base.py (with the teachers), teacher_loop/teacher_manager.py
    "distillation": lambda cfg: cfg.distillation,
    # not built by verl's V1 trainer, but verl's typed schema of the node: checked too. (``reward`` is
    # not: verl 0.9.1's RewardManagerConfig cannot be instantiated, its __post_init__ calls a missing
    # super().__post_init__; verl reads that node as a DictConfig.)
    "algorithm": lambda cfg: cfg.algorithm,
}


def build_verl_dataclasses(cfg: DictConfig) -> dict[str, object]:
    """Each sub-config verl builds as its dataclass (critic only when verl has one); verl's errors raise."""
    builders = dict(SUBCONFIGS)
    if need_critic(cfg):
        builders["critic"] = lambda c: c.critic  # v1 trainer_base.py
    return {path: omega_conf_to_dataclass(build(cfg)) for path, build in builders.items()}


def worker_gpu_checks(cfg: DictConfig) -> None:
    """verl's GPU-count assertions that run in its workers, on the recipe's counts."""
    n_gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    rollout = cfg.actor_rollout_ref.rollout
    infer = (
        rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    )
    if n_gpus % infer:
        raise ValueError(f"rollout world size {infer} does not divide the student's {n_gpus} GPUs")
    for role in ("actor", "ref"):
        mcore = cfg.actor_rollout_ref[role].get("megatron")
        if mcore is not None:
            size = mcore.tensor_model_parallel_size * mcore.pipeline_model_parallel_size
            size *= mcore.context_parallel_size
            if n_gpus % size:
                raise ValueError(f"{role}: megatron TP x PP x CP = {size} does not divide {n_gpus} GPUs")


def verl_checks(row: Row, extra: list[str] | None = None) -> dict[str, object]:
    student = assets.build_model(assets.STUDENT)
    _, cfg = compose_launch(row, [f"actor_rollout_ref.model.path={student}", *(extra or [])])
    built = build_verl_dataclasses(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    worker_gpu_checks(cfg)
    return built


@pytest.mark.parametrize("row", RL_ROWS, ids=row_id)
def test_recipe_builds_as_verls_dataclasses_and_validates(row):
    built = verl_checks(row)
    assert set(built) == set(SUBCONFIGS)  # GRPO-style: no critic
    actor = built["actor_rollout_ref.actor"]
    expected = "McoreActorConfig" if row.engine == "megatron" else "FSDPActorConfig"
    assert type(actor).__name__ == type(built["actor_rollout_ref.ref"]).__name__ == expected
    if row.engine == "megatron":  # verl_sod/config/recipes/paper/megatron.yaml
        sizes = (actor.megatron.tensor_model_parallel_size, actor.megatron.pipeline_model_parallel_size)
        assert sizes == (2, 1) and actor.megatron.override_transformer_config["attention_backend"] == "auto"
    assert built["actor_rollout_ref.model"].use_remove_padding is True
    assert built["actor_rollout_ref.rollout"].multi_turn.max_assistant_turns == 16
    dist = built["distillation"]
    assert dist.enabled is (row.teacher_pool is not None)
    if dist.enabled:
        (teacher,) = dist.teacher_models.values()
        assert teacher.world_size == row.teacher_pool[0] * row.teacher_pool[1]  # replicas fill the pool
    loss = dist.distillation_loss
    expected_loss = "SODDistillationLossConfig" if row.algo == "sod" else "DistillationLossConfig"
    assert type(loss).__name__ == expected_loss


SOD = next(row for row in RL_ROWS if row.file == "recipes/sod/sod.yaml")
MEGATRON = next(row for row in RL_ROWS if row.engine == "megatron")
BAD = [
    # (row, overrides, what verl or the worker checks say): each is caught on CPU, before any GPU
    (
        SOD,
        ["distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=3"],
        "must divide",
    ),
    (SOD, ["actor_rollout_ref.rollout.tensor_model_parallel_size=3"], "rollout world size 3"),
    (
        MEGATRON,
        ["trainer.n_gpus_per_node=6", "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4"],
        "megatron TP x PP x CP = 4",
    ),
    (
        SOD,
        [
            "actor_rollout_ref.actor.use_dynamic_bsz=false",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
            "actor_rollout_ref.actor.ppo_mini_batch_size=256",
        ],
        "must be >= actor.ppo_mini_batch_size",
    ),
    (SOD, ["distillation.distillation_loss.sod_delta=-1"], "sod_delta must be >= 0"),
]


@pytest.mark.parametrize(("row", "overrides", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_counts_and_values_are_caught(row, overrides, message):
    with pytest.raises(Exception, match=message) as info:
        verl_checks(row, overrides)
    assert isinstance(info.value, ValueError | AssertionError) or message in str(info.value.__cause__)
