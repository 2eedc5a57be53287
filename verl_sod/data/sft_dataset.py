"""verl's multi-turn SFT dataset with each turn cut out of the whole-chat rendering (Qwen3's template).

verl 0.9.1's ``MultiTurnSFTDataset`` renders every message *alone* and checks that the
concatenation equals the whole chat rendered at once. Qwen3's real chat template fails that check on
every chat that ends with an assistant answer: rendered whole, assistant turns after the last user
query keep their ``<think>`` block and the last one always gets one (``<think>\\n\\n</think>\\n\\n``
when it has no reasoning), while a message rendered alone loses its reasoning. verl then raises, and
its suggested ``ignore_input_ids_mismatch=True`` silently trains on the per-message tokens: the
reasoning of every turn is dropped from the training data.

:class:`WholeChatSFTDataset` keeps verl's dataset (padding, truncation, position ids, the sanity
check) and overrides only how one message becomes tokens: the chat is rendered once, the token ids
are split at each ``<|im_start|>`` and each message gets the turn(s) its role opens (a template-added
system turn goes with the first message; tool results the template merges into one turn go with the
first of them). Assistant turns are trained except their ``<|im_start|>assistant\\n`` header, as in
verl. The tokens are exactly Qwen3's whole-chat rendering, so verl's check passes by construction.
Select it in verl's SFT trainer with::

    data.custom_cls.path=pkg://verl_sod.data.sft_dataset data.custom_cls.name=WholeChatSFTDataset

It needs a ChatML-style template (``<|im_start|>ROLE\\n ... <|im_end|>``: Qwen, SmolLM2); other
templates get a :class:`ValueError` naming the row and the fix.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import torch
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

_HEADER = re.compile(r"<\|im_start\|>(\w+)\n")
TURN_START = "<|im_start|>"


def _opens(message: dict[str, Any], role: str, body: str) -> bool:
    """Whether a rendered turn with header ``role`` and text ``body`` belongs to ``message``."""
    if message["role"] == "tool":  # Qwen-style templates render tool results as a user turn
        return role == "tool" or (role == "user" and body.startswith("<tool_response>"))
    return role == message["role"]


class WholeChatSFTDataset(MultiTurnSFTDataset):
    """``MultiTurnSFTDataset`` whose per-message tokens come from one whole-chat rendering."""

    _turns: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    # verl types it PreTrainedTokenizer, whose apply_chat_template / decode / convert_tokens_to_ids
    # return loose unions (str | list[int] | BatchEncoding ...); a chat tokenizer is used here
    tokenizer: Any

    def _process_single_message(  # type: ignore[override]  # verl annotates 3 lists, returns 4 (tensors)
        self,
        index: int,
        message: dict[str, Any],
        full_message: list,
        tools: list[dict[str, Any]] | None = None,
        enable_thinking: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        if index == 0:  # verl passes the row's tools with the first message only
            self._turns = (id(full_message), self._split_turns(full_message, tools, enable_thinking))
        assert self._turns is not None and self._turns[0] == id(full_message), "messages out of order"
        input_ids, loss_mask = self._turns[1][index]
        return input_ids, loss_mask, torch.ones_like(input_ids), {}

    def _render(self, messages: list, tools: list | None, enable_thinking: bool | None) -> torch.Tensor:
        kwargs = dict(self.apply_chat_template_kwargs)
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        out = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=False, tokenize=True, return_dict=True, **kwargs
        )
        return torch.tensor(out["input_ids"], dtype=torch.long).flatten()

    def _split_turns(
        self, messages: list, tools: list | None, enable_thinking: bool | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per message: its token ids in the whole rendering and its loss mask."""
        ids = self._render(messages, tools, enable_thinking)
        start_id = self.tokenizer.convert_tokens_to_ids(TURN_START)
        starts = (ids == start_id).nonzero().flatten().tolist()
        if not starts:
            raise self._error(messages, f"the rendering has no {TURN_START} turns")
        bounds = [0, *starts[1:], len(ids)]  # text before the first turn goes with it
        turns = [ids[a:b] for a, b in itertools.pairwise(bounds)]
        texts = [self.tokenizer.decode(turn) for turn in turns]
        headers = [_HEADER.search(text) for text in texts]
        owner: list[int] = []  # message index of each turn
        k = 0
        for t, (text, header) in enumerate(zip(texts, headers, strict=True)):
            if header is None:
                raise self._error(messages, f"turn {t} has no '{TURN_START}ROLE' header: {text[:60]!r}")
            role, body = header.group(1), text[header.end() :]
            if t == 0 and role == "system" and messages[0]["role"] != "system":
                owner.append(0)  # a system turn the template adds (tools block, default prompt)
                continue
            # a tool result the template merged into the previous tool result's turn has none
            while k < len(messages) and messages[k]["role"] == "tool" and messages[k - 1]["role"] == "tool":
                if _opens(messages[k], role, body):
                    break
                k += 1
            if k >= len(messages) or not _opens(messages[k], role, body):
                expected = messages[k]["role"] if k < len(messages) else "no"
                raise self._error(messages, f"turn {t} is a {role!r} turn where {expected} message was due")
            owner.append(k)
            k += 1
        if k < len(messages) and not all(m["role"] == "tool" for m in messages[k:]):
            raise self._error(messages, f"messages {k}.. have no turn of their own in the rendering")
        return self._per_message(messages, turns, owner)

    def _per_message(
        self, messages: list, turns: list[torch.Tensor], owner: list[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        header_len = len(self.generation_prompt)
        out = []
        for index, message in enumerate(messages):
            mine = [turn for turn, who in zip(turns, owner, strict=True) if who == index]
            ids = torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            if message["role"] == "assistant":
                mask[header_len:] = 1
            out.append((ids, mask))
        return out

    @staticmethod
    def _error(messages: list, reason: str) -> ValueError:
        roles = [m["role"] for m in messages]
        return ValueError(
            f"WholeChatSFTDataset: cannot split the chat {roles} into turns: {reason}. It needs a "
            "ChatML-style template (<|im_start|>ROLE ... <|im_end|>); for other templates use verl's "
            "MultiTurnSFTDataset (unset data.custom_cls) and check its per-turn consistency check."
        )
