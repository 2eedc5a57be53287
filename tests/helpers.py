"""Config overrides shared by tests that compose verl configs with a (never started) teacher."""

TEACHER_OVERRIDES = [
    "distillation.n_gpus_per_node=1",
    "distillation.nnodes=1",
    "distillation.teacher_models.teacher_model.model_path=/nonexistent/teacher",
    "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.name=vllm",
]


def fake_result(
    status: str, stdout: str = "", stderr: str = "", exit_code: int | None = 0, duration_s: float = 0.01
):
    """A sandbox result as the real sandbox returns it, for fake executors in tests."""
    from verl_sod.sandbox.result import SandboxResult

    return SandboxResult(status, stdout, stderr, exit_code, duration_s)
