"""Scripted stand-ins for agent-loop tests: an LLM server, a code executor, hermes calls, the loop itself.

The server has the ``generate`` interface verl's ``AgentLoopBase`` calls
(``server_manager.generate(request_id, prompt_ids=..., sampling_params=..., ...) -> TokenOutput``)
and returns scripted assistant turns; the loop is built the way verl's agent-loop worker builds it.
No Ray, no model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from helpers import fake_result
from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from verl_sod.agent import SODToolAgentLoop
from verl_sod.sandbox.result import SandboxResult
from verl_sod.tools import CodeInterpreterTool

#: verl's ``rollout.multi_turn`` keys for hermes tool calls, one call per step
MULTI_TURN: dict[str, Any] = {
    "max_user_turns": None,
    "max_assistant_turns": None,
    "max_parallel_calls": 1,
    "max_tool_response_length": 2048,
    "tool_response_truncate_side": "middle",
    "format": "hermes",
}


def hermes_call(name: str, args: Any) -> str:
    """One tool call in hermes format, as the model writes it."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


class FakeExecutor:
    """Answers by the code's content: ``raise`` fails, ``while True`` times out, else prints 42."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        self.codes.append(code)
        if "raise" in code:
            return fake_result(
                "error", stderr="Traceback (most recent call last):\nValueError: boom\n", exit_code=1
            )
        if "while True" in code:
            return fake_result("timeout", stderr="[killed]", exit_code=None, duration_s=1.0)
        return fake_result("ok", stdout="42\n")


class ScriptedServer:
    """verl server-manager stand-in: the scripted turns in order (then ``after_end``, if given), each
    ended by <|im_end|> and with log-prob ``log_prob`` per token; it records prompts and replies."""

    def __init__(self, tok: Any, turns: list[str], log_prob: float = -0.25, after_end: str | None = None):
        self.tok, self.turns, self.log_prob, self.after_end = tok, turns, log_prob, after_end
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.prompts: list[list[int]] = []
        self.generated: list[list[int]] = []

    @property
    def calls(self) -> int:
        """How many turns were generated."""
        return len(self.generated)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **_: Any):
        k = len(self.generated)
        text = self.after_end if k >= len(self.turns) and self.after_end is not None else self.turns[k]
        ids = [*self.tok.encode(text, add_special_tokens=False), self.im_end]
        self.prompts.append(list(prompt_ids))
        self.generated.append(ids)
        return TokenOutput(token_ids=ids, log_probs=[self.log_prob] * len(ids), num_preempted=0)


def rollout_config(prompt_length: int, response_length: int, **multi_turn: Any) -> DictConfig:
    """A trainer config with the rollout keys the agent loop reads (``multi_turn`` over MULTI_TURN)."""
    rollout = {
        "multi_turn": {**MULTI_TURN, **multi_turn},
        "prompt_length": prompt_length,
        "response_length": response_length,
        "full_determinism": False,
    }
    return OmegaConf.create({"actor_rollout_ref": {"rollout": rollout}, "data": {}})


def agent_loop(loop_cls: type, cfg: DictConfig, tok: Any, server: Any, tools: list, **loop_kw: Any) -> Any:
    """A ``loop_cls`` agent loop on ``server`` and ``tools``, built as verl's agent-loop worker builds it."""
    return loop_cls(
        trainer_config=DictConfigWrap(cfg),
        server_manager=server,
        tokenizer=tok,
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(cfg.data),
        hf_model_type="qwen3",  # Qwen CT builder: inserts a boundary "\n" after <|im_end|>
        tools=ToolListWrap(tools),
        **loop_kw,
    )


def make_loop(
    tok: Any,
    server: Any,
    tools: list,
    response_length: int = 4096,
    tool_timeout_s: float = 300.0,
    **multi_turn: Any,
) -> SODToolAgentLoop:
    """A ``sod_tool_agent`` loop with a 2048-token prompt; ``multi_turn`` overrides :data:`MULTI_TURN`."""
    cfg = rollout_config(2048, response_length, **multi_turn)
    return agent_loop(SODToolAgentLoop, cfg, tok, server, tools, tool_timeout_s=tool_timeout_s)


def run_script(
    tok: Any, turns: list[str], tools: list | None = None, setup: Any = None, **loop_kw: Any
) -> tuple[Any, ScriptedServer]:
    """(output, server) of one ``sod_tool_agent`` trajectory on the scripted ``turns`` (default tool: a
    code_interpreter on a :class:`FakeExecutor`); ``setup(loop)`` runs before the trajectory."""
    server = ScriptedServer(tok, turns)
    tools = tools if tools is not None else [CodeInterpreterTool({"timeout_s": 1.0}, executor=FakeExecutor())]
    messages = [{"role": "user", "content": "What is 6*7? Use the tool."}]

    async def go():  # verl's AgentLoopBase binds the running event loop at construction
        loop = make_loop(tok, server, tools, **loop_kw)
        if setup is not None:
            setup(loop)
        return await loop.run({"temperature": 1.0}, raw_prompt=messages)

    return asyncio.run(go()), server
