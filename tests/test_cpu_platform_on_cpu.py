"""The CPU platform, the verl internals it replaces, and the `hf` rollout server (no Ray needed)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import subprocess
import sys

import pytest
import torch

from verl_sod.cpu.hf_rollout import HFRolloutServer
from verl_sod.cpu.platform import PlatformCPU
from verl_sod.tiny import assets


def test_platform_answers_what_verl_asks():
    p = PlatformCPU()
    assert (p.device_name, p.communication_backend_name(), p.ray_resource_name()) == ("cpu", "gloo", "GPU")
    mod = p.device_module
    assert mod.memory_allocated() == 0 and mod.max_memory_reserved() == 0
    free, total = mod.mem_get_info()
    assert 0 < free <= total
    assert mod.get_device_name() == "cpu" and mod.is_available()
    assert isinstance(mod.get_rng_state(), torch.Tensor)


def test_platform_is_inert_unless_selected(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert not PlatformCPU().is_platform_available(use_smi_check=True)
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert PlatformCPU().is_platform_available(use_smi_check=True)


def test_verl_still_builds_the_backend_string_the_patch_exists_for():
    """Fails loudly when verl changes the function the CPU patch wraps."""
    from verl.utils import distributed

    source = inspect.getsource(distributed.initialize_global_process_group_ray)
    assert 'backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in source
    assert list(inspect.signature(distributed.initialize_global_process_group_ray).parameters) == [
        "timeout_second",
        "backend",
    ]
    import verl.workers.engine_workers as engine_workers

    assert "initialize_global_process_group_ray(timeout_second=None)" in inspect.getsource(engine_workers)


def test_verl_still_hard_codes_the_backend_of_its_torchrun_process_group():
    """The second patch replaces this function (no backend argument to pass); fail if verl changes it."""
    from verl.utils import distributed

    source = inspect.getsource(distributed.initialize_global_process_group)
    assert 'backend = f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in source
    assert "return local_rank, rank, world_size" in source
    sft_source = inspect.getsource(importlib.import_module("verl.trainer.sft_trainer"))
    assert "from verl.utils.distributed import initialize_global_process_group" in sft_source


TORCHRUN_PG_PROBE = """
import torch.distributed as dist
import verl
import verl.utils.distributed as distributed
from verl_sod.cpu.verl_patches import PATCHED_MARK
assert getattr(distributed.initialize_global_process_group, PATCHED_MARK, False)
assert distributed.initialize_global_process_group(timeout_second=60) == (0, 0, 1)
assert dist.get_backend() == "gloo", dist.get_backend()
print("PG-OK")
"""


def test_patched_torchrun_process_group_initialises_with_gloo_on_cpu():
    env = {**os.environ, "VERL_PLATFORM": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29534")
    proc = subprocess.run(
        [sys.executable, "-c", TORCHRUN_PG_PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    assert "PG-OK" in proc.stdout, proc.stderr[-3000:]


PG_PROBE = """
import torch.distributed as dist
import verl
import verl.workers.engine_workers as ew
from verl_sod.cpu.verl_patches import PATCHED_MARK
assert getattr(ew.initialize_global_process_group_ray, PATCHED_MARK, False)
ew.initialize_global_process_group_ray(timeout_second=None)
assert dist.get_backend() == "gloo", dist.get_backend()
print("PG-OK")
"""


def test_patched_process_group_initialises_with_gloo_on_cpu():
    env = {**os.environ, "VERL_PLATFORM": "cpu", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = "29533"
    proc = subprocess.run(
        [sys.executable, "-c", PG_PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    assert "PG-OK" in proc.stdout, proc.stderr[-3000:]


def test_patches_are_not_applied_without_the_cpu_platform():
    probe = (
        "import verl, verl.workers.engine_workers as ew;"
        "print(hasattr(ew.initialize_global_process_group_ray, '_verl_sod_cpu_patch'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERL_SOD_CACHE", str(tmp_path_factory.mktemp("assets")))
        path = assets.build_model(assets.STUDENT)
    return HFRolloutServer(str(path), response_length=16, prompt_length=32, seed=0), path


def _reference_logprobs(path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return logp[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def test_generate_returns_tokens_and_their_logprobs(server):
    srv, path = server
    prompt = [5, 17, 42, 99, 3]
    out = asyncio.run(srv.generate("r1", prompt, {"temperature": 1.0, "logprobs": True, "max_tokens": 10}))
    assert 1 <= len(out.token_ids) <= 10 and len(out.log_probs) == len(out.token_ids)
    ref = _reference_logprobs(path, prompt + out.token_ids)[len(prompt) - 1 :]
    torch.testing.assert_close(torch.tensor(out.log_probs), ref, rtol=1e-4, atol=1e-4)
    assert out.stop_reason == "completed"


def test_generate_respects_the_response_budget_and_greedy(server):
    srv, _ = server
    a = asyncio.run(srv.generate("r", [1, 2, 3], {"temperature": 0.0, "max_tokens": 1000}))
    b = asyncio.run(srv.generate("r", [1, 2, 3], {"temperature": 0.0}))
    assert len(a.token_ids) <= 16 and a.token_ids == b.token_ids and a.log_probs is None


def test_prompt_logprobs_in_vllms_format(server):
    srv, path = server
    ids = [7, 8, 9, 10, 11, 12]
    out = asyncio.run(srv.generate("t", ids, {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}))
    got = out.extra_fields["prompt_logprobs"]
    assert len(got) == len(ids) and got[-1] == [0.0]
    assert out.extra_fields["prompt_ids"][:-1] == [[i] for i in ids[1:]]
    torch.testing.assert_close(
        torch.tensor([g[0] for g in got[:-1]]), _reference_logprobs(path, ids), rtol=1e-4, atol=1e-4
    )


def test_load_weights_changes_the_model_and_rejects_unknown_names(server):
    srv, _ = server
    sd = {k: torch.zeros_like(v) for k, v in srv.model.state_dict().items() if k.endswith("norm.weight")}
    assert asyncio.run(srv.load_weights(sd)) == len(sd)
    assert all(torch.count_nonzero(srv.model.state_dict()[k]) == 0 for k in sd)
    with pytest.raises(KeyError, match="not in the model"):
        asyncio.run(srv.load_weights({"no.such.weight": torch.zeros(1)}))


def test_concurrent_requests_are_batched_and_match_unbatched_logprobs(server):
    """Prompts of different lengths decoded in one left-padded batch: every row's log-probs equal a
    plain forward pass over that row alone, rows stop independently, and scoring batches too."""
    _, path = server
    srv = HFRolloutServer(str(path), response_length=16, prompt_length=32, seed=0)  # unmodified weights
    prompts = [[5, 17, 42, 99, 3], [1, 2], [9, 8, 7, 6, 5, 4, 3, 2, 1], [11]]
    params = {"temperature": 1.0, "logprobs": True}

    async def both():
        limits = [12, 3, 12, 12]
        gens = [
            srv.generate(f"g{i}", p, {**params, "max_tokens": n})
            for i, (p, n) in enumerate(zip(prompts, limits, strict=True))
        ]
        scores = [srv.generate(f"s{i}", p, {"prompt_logprobs": 0}) for i, p in enumerate(prompts)]
        return await asyncio.gather(*gens), await asyncio.gather(*scores)

    calls = []
    original = srv._run_group
    srv._run_group = lambda group, requests: calls.append(len(requests)) or original(group, requests)
    try:
        outs, scored = asyncio.run(both())
    finally:
        srv._run_group = original
    assert calls[0] == len(prompts), calls  # the four generations shared one batch
    assert len(outs[1].token_ids) <= 3
    for prompt, out, score in zip(prompts, outs, scored, strict=True):
        assert 1 <= len(out.token_ids) == len(out.log_probs)
        ref = _reference_logprobs(path, prompt + out.token_ids)[len(prompt) - 1 :]
        torch.testing.assert_close(torch.tensor(out.log_probs), ref, rtol=1e-4, atol=1e-4)
        if len(prompt) > 1:
            got = [g[0] for g in score.extra_fields["prompt_logprobs"][:-1]]
            torch.testing.assert_close(
                torch.tensor(got), _reference_logprobs(path, prompt), rtol=1e-4, atol=1e-4
            )
