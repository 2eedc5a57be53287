"""Builders shared by tests and benchmarks: config overrides, fake sandbox results, data rows and files.

Every test builder lives once: here, in tests/builders.py (verl-shaped tensors and micro-batches;
imports torch and verl), tests/scripted_agent.py (agent-loop stand-ins) or tests/oracle.py (plain-loop
oracles and torch-only random batches). A test module never imports another ``test_*.py`` module
(tests/test_layers_on_cpu.py checks that). Only the standard library is imported at module level.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from verl_sod.sandbox.result import SandboxResult

TEACHER_OVERRIDES = [
    "distillation.n_gpus_per_node=1",
    "distillation.nnodes=1",
    "distillation.teacher_models.teacher_model.model_path=/nonexistent/teacher",
    "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.name=vllm",
]


def fake_result(
    status: str, stdout: str = "", stderr: str = "", exit_code: int | None = 0, duration_s: float = 0.01
) -> SandboxResult:
    """A sandbox result as the real sandbox returns it, for fake executors in tests."""
    from verl_sod.sandbox.result import SandboxResult

    return SandboxResult(status, stdout, stderr, exit_code, duration_s)


# ----------------------------------------------------------------------------- configs
def model_overrides(student: str, data: str, teacher: str | None = None) -> list[str]:
    """Local student and data files, a GPU attention that needs no flash-attn; then the teacher, if any."""
    overrides = [
        f"actor_rollout_ref.model.path={student}",
        f"data.train_files={data}",
        f"data.val_files={data}",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    ]
    if teacher is not None:
        overrides.append(f"distillation.teacher_models.teacher_model.model_path={teacher}")
    return overrides


# ----------------------------------------------------------------------------- data rows and files
#: the code_interpreter call of :func:`openai_row`
SFT_CALL_ARGS = {"code": "print(2 + 3)"}


def openai_row() -> dict:
    """OpenAI chat with a structured tool call (arguments as a JSON string) and no ``tools``."""
    call = {"id": "c1", "type": "function", "function": {"name": "code_interpreter"}}
    call["function"]["arguments"] = json.dumps(SFT_CALL_ARGS)
    return {
        "messages": [
            {"role": "system", "content": "Think, then use the tool."},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "I will compute it.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "5\n"},
            {"role": "assistant", "content": "The answer is \\boxed{5}."},
        ]
    }


def sharegpt_row() -> dict:
    """ShareGPT ``conversations`` with a hermes text call and a dict-valued ``arguments``."""
    body = json.dumps({"name": "code_interpreter", "arguments": {"code": "print('hi')"}})
    return {
        "conversations": [
            {"from": "human", "value": "Print hi."},
            {"from": "gpt", "value": f"Running it.\n<tool_call>\n{body}\n</tool_call>\n"},
            {"from": "observation", "value": "hi\n"},
            {"from": "gpt", "value": "It printed hi."},
            {"from": "human", "value": "Thanks. And 1 + 1?"},
            {"from": "gpt", "value": "That is 2."},
        ]
    }


def lcb_compress(payload: object) -> str:
    """LiveCodeBench's private-test encoding: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(payload)))).decode()


def read_parquet_rows(path: Path) -> list[dict]:
    """The rows of a parquet file, as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
