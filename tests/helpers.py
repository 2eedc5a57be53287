"""Config overrides shared by tests that compose verl configs with a (never started) teacher."""

TEACHER_OVERRIDES = [
    "distillation.n_gpus_per_node=1",
    "distillation.nnodes=1",
    "distillation.teacher_models.teacher_model.model_path=/nonexistent/teacher",
    "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.name=vllm",
]
