"""``hf`` rollout backend: a transformers model in a Ray actor, speaking verl's token-in/token-out API.

verl 0.9.1 ships rollout replicas for vLLM, SGLang and TensorRT-LLM only, all GPU-bound. This
backend is registered under the name ``hf`` in verl's two rollout registries
(``RolloutReplicaRegistry`` for the servers, ``_ROLLOUT_REGISTRY`` for the adapter inside the
training worker), so ``actor_rollout_ref.rollout.name=hf`` (and the teacher's ``inference.name=hf``)
run verl's own agent loop, teacher loop and trainer on CPU:

* ``generate`` samples with a KV cache (temperature, top-k, top-p) and returns ``TokenOutput`` with
  the log-prob of every sampled token under the temperature-scaled distribution, as verl's actor
  computes it; generation stops after an EOS token (included) or ``max_tokens``.
* a ``prompt_logprobs`` request (verl's teacher loop) is answered with one forward pass in vLLM's
  format: entry i holds ``log p(token_{i+1} | tokens_<=i)``, the last entry a dummy 0.
* weight updates: the training worker's :class:`HFServerAdapter` gathers the actor's full state
  dict and loads it into the server, every step.

It is meant for tiny models on CPU (tests, ``make demo``), not for throughput.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Generator
from typing import Any

import ray
import torch
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, RolloutReplicaRegistry, TokenOutput

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf"


def _sample(logits_1V: torch.Tensor, temperature: float, top_k: int, top_p: float) -> tuple[int, float]:
    """Sample one token; return it and its log-prob under the temperature-scaled distribution."""
    if temperature <= 0:
        logp_1V = torch.log_softmax(logits_1V.float(), dim=-1)
        token = int(logp_1V.argmax(dim=-1))
        return token, float(logp_1V[0, token])
    logp_1V = torch.log_softmax(logits_1V.float() / temperature, dim=-1)
    filtered = logp_1V.clone()
    if top_k is not None and 0 < top_k < filtered.shape[-1]:
        kth = torch.topk(filtered, top_k, dim=-1).values[..., -1:]
        filtered[filtered < kth] = -float("inf")
    if top_p is not None and top_p < 1.0:
        sorted_lp, order = torch.sort(filtered, descending=True)
        cum = torch.softmax(sorted_lp, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_lp, dim=-1) > top_p
        filtered[0, order[0, drop[0]]] = -float("inf")
    token = int(torch.multinomial(torch.softmax(filtered, dim=-1), 1))
    return token, float(logp_1V[0, token])


class HFRolloutServer:
    """The server actor: one transformers model, generation and scoring, weight loading."""

    def __init__(self, model_path: str, response_length: int, prompt_length: int, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(int(os.environ.get("VERL_SOD_HF_THREADS", "1")))
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        eos = self.model.generation_config.eos_token_id or self.model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.response_length = response_length
        self.prompt_length = prompt_length
        self.global_steps: int | None = None

    @torch.no_grad()
    def _generate(self, prompt_ids: list[int], max_tokens: int, params: dict[str, Any]) -> TokenOutput:
        temperature = float(params.get("temperature", 1.0))
        top_k, top_p = int(params.get("top_k", -1) or -1), float(params.get("top_p", 1.0) or 1.0)
        out = self.model(torch.tensor([prompt_ids]), use_cache=True)
        tokens: list[int] = []
        log_probs: list[float] = []
        for _ in range(max_tokens):
            token, logp = _sample(out.logits[:, -1, :], temperature, top_k, top_p)
            tokens.append(token)
            log_probs.append(logp)
            if token in self.eos_ids:
                break
            out = self.model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs if params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    @torch.no_grad()
    def _prompt_logprobs(self, prompt_ids: list[int]) -> TokenOutput:
        ids_1S = torch.tensor([prompt_ids])
        logits_1SV = self.model(ids_1S).logits.float()
        logp_1SV = torch.log_softmax(logits_1SV, dim=-1)
        next_S = logp_1SV[0, :-1].gather(-1, ids_1S[0, 1:].unsqueeze(-1)).squeeze(-1)
        prompt_logprobs = [[float(x)] for x in next_S] + [[0.0]]
        prompt_ids_out = [[int(x)] for x in prompt_ids[1:]] + [[0]]
        return TokenOutput(
            token_ids=[int(logits_1SV[0, -1].argmax())],
            stop_reason="completed",
            extra_fields={
                "global_steps": self.global_steps,
                "prompt_ids": prompt_ids_out,
                "prompt_logprobs": prompt_logprobs,
            },
        )

    async def generate(
        self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any
    ) -> TokenOutput:
        params = dict(sampling_params)
        prompt_ids = list(prompt_ids)
        if params.get("prompt_logprobs") is not None:
            if params["prompt_logprobs"]:
                raise NotImplementedError("hf backend: top-k prompt_logprobs are not supported (use k1/sod)")
            return await asyncio.to_thread(self._prompt_logprobs, prompt_ids)
        budget = self.prompt_length + self.response_length - len(prompt_ids)
        max_tokens = (
            params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or self.response_length
        )
        max_tokens = max(1, min(int(max_tokens), self.response_length, budget))
        return await asyncio.to_thread(self._generate, prompt_ids, max_tokens, params)

    async def load_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        own = self.model.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise KeyError(f"hf rollout: weights not in the model: {unknown[:5]}")
        self.model.load_state_dict(state_dict, strict=False)
        return len(state_dict)

    async def set_global_steps(self, global_steps: int | None) -> None:
        self.global_steps = global_steps

    async def abort_all_requests(self, **_: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def _noop(self, *_: Any, **__: Any) -> None:
        return None

    wake_up = sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = _noop
    resume_generation = start_profile = stop_profile = wait_for_requests_to_drain = _noop


def _model_path(model_config: Any) -> str:
    for key in ("local_path", "path"):
        value = getattr(model_config, key, None) if not isinstance(model_config, dict) else None
        if value is None and hasattr(model_config, "get"):
            value = model_config.get(key)
        if value:
            return str(value)
    raise ValueError(f"hf rollout: no model path in {model_config!r}")


class HFReplica(RolloutReplica):
    """One ``HFRolloutServer`` per replica; no GPU workers, no HTTP server."""

    def server_name(self) -> str:
        kind = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
        return f"{BACKEND_NAME}_server_{kind}{self.replica_rank}_0{self.name_suffix}"

    async def launch_servers(self) -> None:
        server = (
            ray.remote(HFRolloutServer)
            .options(name=self.server_name(), num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(
                model_path=_model_path(self.model_config),
                response_length=self.config.response_length,
                prompt_length=self.config.prompt_length,
                seed=self.config.seed + self.replica_rank,
            )
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = self.server_name()

    async def init_colocated(self, resource_pool: Any) -> None:
        self.rollout_mode = RolloutMode.COLOCATED
        self.resource_pool = resource_pool
        await self.launch_servers()

    async def init_standalone(self) -> None:
        self.rollout_mode = RolloutMode.STANDALONE
        await self.launch_servers()


class HFServerAdapter(BaseRollout):
    """Lives in the training worker; pushes the actor's weights to its replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        per_replica = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // per_replica if replica_rank == -1 else replica_rank
        self._has_server = rank % per_replica == 0
        self._handle: Any = None

    def _server(self) -> Any:
        if self._handle is None:
            self._handle = ray.get_actor(f"{BACKEND_NAME}_server_{self.replica_rank}_0")
        return self._handle

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        **kwargs: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout: wire_format={wire_format!r} is not supported")
        # Every rank drains the generator (it may run collectives); only the replica's rank 0 sends.
        state_dict = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if not self._has_server:
            return
        await self._server().load_weights.remote(state_dict)
        if kwargs.get("global_steps") is not None:
            await self._server().set_global_steps.remote(kwargs["global_steps"])


def register_hf_backend() -> None:
    """Add ``hf`` to verl's replica and adapter registries (idempotent)."""
    RolloutReplicaRegistry.register(BACKEND_NAME, lambda: HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(BACKEND_NAME, "async")] = f"{__name__}.HFServerAdapter"
