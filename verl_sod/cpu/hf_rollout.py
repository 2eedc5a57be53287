"""``hf`` rollout backend: a transformers model in a Ray actor, speaking verl's token-in/token-out API.

verl 0.9.1 ships rollout replicas for vLLM, SGLang and TensorRT-LLM only, all GPU-bound. This
backend is registered under the name ``hf`` in verl's two rollout registries
(``RolloutReplicaRegistry`` for the servers, ``_ROLLOUT_REGISTRY`` for the adapter inside the
training worker), so ``actor_rollout_ref.rollout.name=hf`` (and the teacher's ``inference.name=hf``)
run verl's own agent loop, teacher loop and trainer on CPU:

* ``generate`` samples with a KV cache (temperature, top-k, top-p) and returns ``TokenOutput`` with
  the log-prob of every sampled token under the temperature-scaled distribution, as verl's actor
  computes it; generation stops after an EOS token (included) or ``max_tokens``. Requests that
  arrive together (verl's agent loops send one per trajectory turn) are decoded as one left-padded
  batch, which on CPU costs about as much per forward pass as a single request.
* a ``prompt_logprobs`` request (verl's teacher loop) is answered with one (batched) forward pass in vLLM's
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
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, RolloutReplicaRegistry, TokenOutput

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf"


def _sample_B(
    logits_BV: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return the tokens and their log-probs under the temperature-scaled
    (unfiltered) distribution, which is what verl's actor recomputes."""
    if temperature <= 0:
        logp_BV = torch.log_softmax(logits_BV.float(), dim=-1)
        token_B = logp_BV.argmax(dim=-1)
        return token_B, logp_BV.gather(-1, token_B.unsqueeze(-1)).squeeze(-1)
    logp_BV = torch.log_softmax(logits_BV.float() / temperature, dim=-1)
    filtered_BV = logp_BV.clone()
    if top_k is not None and 0 < top_k < filtered_BV.shape[-1]:
        kth_B1 = torch.topk(filtered_BV, top_k, dim=-1).values[:, -1:]
        filtered_BV[filtered_BV < kth_B1] = -float("inf")
    if top_p is not None and top_p < 1.0:
        sorted_BV, order_BV = torch.sort(filtered_BV, descending=True, dim=-1)
        probs_BV = torch.softmax(sorted_BV, dim=-1)
        drop_sorted_BV = probs_BV.cumsum(dim=-1) - probs_BV > top_p
        drop_BV = torch.zeros_like(drop_sorted_BV).scatter(-1, order_BV, drop_sorted_BV)
        filtered_BV[drop_BV] = -float("inf")
    token_B = torch.multinomial(torch.softmax(filtered_BV, dim=-1), 1).squeeze(-1)
    return token_B, logp_BV.gather(-1, token_B.unsqueeze(-1)).squeeze(-1)


def _left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, ``[B, L]``."""
    width = max(len(p) for p in prompts)
    ids_BL = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn_BL = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids_BL[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn_BL[b, width - len(p) :] = 1
    return ids_BL, attn_BL


@dataclass
class _Request:
    group: tuple  # requests of one group share a forward pass
    prompt_ids: list[int]
    max_tokens: int
    future: asyncio.Future = field(repr=False)


class HFRolloutServer:
    """The server actor: one transformers model, generation and scoring, weight loading.

    Concurrent requests (verl's agent loops send one per trajectory turn) are gathered for
    ``VERL_SOD_HF_BATCH_WINDOW_MS`` (default 10 ms) and decoded together, left-padded, with one KV
    cache: on CPU a tiny model costs about as much per forward pass for 32 rows as for one.
    """

    def __init__(self, model_path: str, response_length: int, prompt_length: int, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(int(os.environ.get("VERL_SOD_HF_THREADS", "1")))
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        eos = self.model.generation_config.eos_token_id or self.model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = int(self.model.config.pad_token_id or 0)
        self.response_length = response_length
        self.prompt_length = prompt_length
        self.global_steps: int | None = None
        self.batch_window_s = float(os.environ.get("VERL_SOD_HF_BATCH_WINDOW_MS", "10")) / 1000
        self.max_batch = int(os.environ.get("VERL_SOD_HF_MAX_BATCH", "256"))
        self._pending: list[_Request] = []
        self._leader_active = False

    @torch.no_grad()
    def _generate_batch(
        self, prompts: list[list[int]], max_tokens: list[int], temperature: float, top_k: int, top_p: float
    ) -> list[tuple[list[int], list[float]]]:
        """Decode all rows together; row b stops after an EOS token (kept) or ``max_tokens[b]``."""
        ids_BL, attn_BL = _left_pad(prompts, self.pad_id)
        pos_BL = (attn_BL.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids_BL, attention_mask=attn_BL, position_ids=pos_BL, use_cache=True)
        next_pos_B1 = pos_BL[:, -1:] + 1
        limit_B = torch.tensor(max_tokens)
        eos_E = torch.tensor(sorted(self.eos_ids))
        done_B = torch.zeros(len(prompts), dtype=torch.bool)
        length_B = limit_B.clone()
        tokens, logps = [], []
        for t in range(int(limit_B.max())):
            token_B, logp_B = _sample_B(out.logits[:, -1, :], temperature, top_k, top_p)
            tokens.append(token_B)
            logps.append(logp_B)
            finished_B = ~done_B & (torch.isin(token_B, eos_E) | (limit_B <= t + 1))
            length_B[finished_B] = t + 1
            done_B |= finished_B
            if bool(done_B.all()):
                break
            attn_BL = torch.cat([attn_BL, torch.ones_like(attn_BL[:, :1])], dim=-1)
            out = self.model(
                input_ids=token_B.unsqueeze(-1),
                attention_mask=attn_BL,
                position_ids=next_pos_B1,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_pos_B1 = next_pos_B1 + 1
        token_BT, logp_BT = torch.stack(tokens, dim=1), torch.stack(logps, dim=1)
        return [(token_BT[b, :n].tolist(), logp_BT[b, :n].tolist()) for b, n in enumerate(length_B.tolist())]

    @torch.no_grad()
    def _score_batch(self, prompts: list[list[int]]) -> list[list[float]]:
        """``log p(token_{i+1} | tokens_<=i)`` for every prompt, one forward pass for all."""
        ids_BL, attn_BL = _left_pad(prompts, self.pad_id)
        pos_BL = (attn_BL.cumsum(-1) - 1).clamp(min=0)
        logp_BLV = torch.log_softmax(
            self.model(input_ids=ids_BL, attention_mask=attn_BL, position_ids=pos_BL).logits.float(), dim=-1
        )
        next_BL = logp_BLV[:, :-1].gather(-1, ids_BL[:, 1:].unsqueeze(-1)).squeeze(-1)
        return [next_BL[b, next_BL.shape[1] - len(p) + 1 :].tolist() for b, p in enumerate(prompts)]

    def _run_group(self, group: tuple, requests: list[_Request]) -> list[Any]:
        prompts = [r.prompt_ids for r in requests]
        if group[0] == "score":
            return self._score_batch(prompts)
        _, temperature, top_k, top_p = group
        return self._generate_batch(prompts, [r.max_tokens for r in requests], temperature, top_k, top_p)

    async def _submit(self, group: tuple, prompt_ids: list[int], max_tokens: int = 0) -> Any:
        """Queue one request; the first waiting caller drains the queue batch by batch."""
        request = _Request(group, prompt_ids, max_tokens, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        if not self._leader_active:
            self._leader_active = True
            try:
                while self._pending:
                    await asyncio.sleep(self.batch_window_s)
                    await self._drain_once()
            finally:
                self._leader_active = False
        return await request.future

    async def _drain_once(self) -> None:
        taken, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        groups: dict[tuple, list[_Request]] = {}
        for r in taken:
            groups.setdefault(r.group, []).append(r)
        for group, requests in groups.items():
            try:
                results = await asyncio.to_thread(self._run_group, group, requests)
            except Exception as exc:  # every caller of the batch sees the failure
                for r in requests:
                    r.future.set_exception(exc)
                continue
            for r, result in zip(requests, results, strict=True):
                r.future.set_result(result)

    async def generate(
        self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any
    ) -> TokenOutput:
        params = dict(sampling_params)
        prompt_ids = [int(x) for x in prompt_ids]
        if params.get("prompt_logprobs") is not None:
            if params["prompt_logprobs"]:
                raise NotImplementedError("hf backend: top-k prompt_logprobs are not supported (use k1/sod)")
            next_S = await self._submit(("score",), prompt_ids)
            return TokenOutput(
                token_ids=[0],
                stop_reason="completed",
                extra_fields={
                    "global_steps": self.global_steps,
                    "prompt_ids": [[x] for x in prompt_ids[1:]] + [[0]],
                    "prompt_logprobs": [[x] for x in next_S] + [[0.0]],
                },
            )
        budget = self.prompt_length + self.response_length - len(prompt_ids)
        max_tokens = (
            params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or self.response_length
        )
        max_tokens = max(1, min(int(max_tokens), self.response_length, budget))
        temperature = float(params.get("temperature", 1.0))
        top_k, top_p = int(params.get("top_k", -1) or -1), float(params.get("top_p", 1.0) or 1.0)
        tokens, log_probs = await self._submit(("gen", temperature, top_k, top_p), prompt_ids, max_tokens)
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs if params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

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
        server: Any = (
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
