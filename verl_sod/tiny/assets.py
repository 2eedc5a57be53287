"""Tiny, deterministic assets built locally: a Qwen3-style chat tokenizer and tiny Qwen3 models.

Nothing is downloaded. The tokenizer is byte-level (every byte is a token, no merges) plus the
special tokens Qwen3 uses for chat and tool calls, so any text round-trips exactly and verl's
``hermes`` tool parser finds ``<tool_call>...</tool_call>`` in decoded responses. The chat template
renders assistant tool calls and tool responses the way Qwen3's does (hermes ``<tool_call>`` JSON;
tool results in a ``user`` turn wrapped in ``<tool_response>``). Two deliberate simplifications
keep prompts short for byte-level tiny models: the tool list is one line per tool
(``name(args): description``) instead of the JSON schemas, and consecutive tool messages get a
turn each instead of sharing one.

``extra_tokens`` (optional) adds *non-special* tokens for a task's fixed format strings (a tool call's
JSON skeleton, role headers): each becomes one token, yet survives ``skip_special_tokens`` decoding,
so verl's parsers and rewards see the same text. Without them the tokenizer and its cache key are
exactly the default ones.

Assets live in a cache directory keyed by their spec, so a second call is free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>{% for tool in tools %}{{ '\\n' }}{{ tool.function.name }}("
    "{{ tool.function.parameters.properties | list | join(', ') }}): {{ tool.function.description }}"
    "{% endfor %}{{ '\\n' }}</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}"
    "{% elif m.role == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{% for tc in m.tool_calls or [] %}{% if loop.first and m.content %}{{ '\\n' }}{% endif %}"
    "{% set args = tc.function.arguments %}"
    '<tool_call>\n{"name": "{{ tc.function.name }}", "arguments": '
    "{{ args if args is string else (args | tojson) }}}\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny Qwen3 causal LM."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048
    seed: int = 0


STUDENT = TinyModelSpec(hidden_size=96, num_hidden_layers=3, intermediate_size=192, seed=1)
TEACHER = TinyModelSpec(hidden_size=128, num_hidden_layers=3, intermediate_size=256, seed=2)


def cache_root() -> Path:
    """``$VERL_SOD_CACHE`` or ``~/.cache/verl_sod``."""
    return Path(os.environ.get("VERL_SOD_CACHE", Path.home() / ".cache" / "verl_sod"))


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _tokenizer_key(extra_tokens: tuple[str, ...]) -> dict:
    payload: dict = {"t": CHAT_TEMPLATE, "s": SPECIAL_TOKENS}
    if extra_tokens:  # the default tokenizer keeps its historical key
        payload["x"] = list(extra_tokens)
    return payload


def build_tokenizer(out_dir: Path | None = None, extra_tokens: tuple[str, ...] = ()):
    """Save (once) and return the byte-level chat tokenizer, plus non-special ``extra_tokens``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    extra_tokens = tuple(extra_tokens)
    bad = [t for t in extra_tokens if not t or t in SPECIAL_TOKENS or extra_tokens.count(t) > 1]
    if bad:
        raise ValueError(f"extra_tokens must be distinct, non-empty and not special tokens; got {bad!r}")
    out_dir = Path(out_dir or cache_root() / f"tokenizer-{_key(_tokenizer_key(extra_tokens))}")
    if (out_dir / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(out_dir)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    if extra_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return PreTrainedTokenizerFast.from_pretrained(out_dir)


def build_model(spec: TinyModelSpec, out_dir: Path | None = None, extra_tokens: tuple[str, ...] = ()) -> Path:
    """Save (once) a randomly initialised tiny Qwen3 model sharing the chat tokenizer; return its dir."""
    import torch
    from transformers import Qwen3ForCausalLM

    tok = build_tokenizer(extra_tokens=extra_tokens)
    key = {**asdict(spec), "v": len(tok), **({"x": list(extra_tokens)} if extra_tokens else {})}
    out_dir = Path(out_dir or cache_root() / f"qwen3-tiny-{_key(key)}")
    if (out_dir / "config.json").exists():
        return out_dir
    config = qwen3_config(spec, tok, bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"))
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def qwen3_config(spec: Any, tok: Any, **token_ids: Any) -> Any:
    """Tiny Qwen3 config of a model spec (hidden size, layers, heads...) on ``tok``'s vocabulary."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **token_ids,
    )
