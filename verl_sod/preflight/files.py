"""Preflight checks that look outside the config: model directories, tokenizers, data and tool files,
and the attention kernel a GPU launch will ask for.

Each check raises :class:`verl_sod.preflight.ConfigError` naming the key, the path and the fix.
Hub ids are resolved through the local Hugging Face cache only (``local_files_only``): nothing
is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from verl_sod.preflight.errors import ConfigError, verl_default

logger = logging.getLogger(__name__)

#: opt-out of the teacher/student tokenizer comparison when a model cannot be found locally
SKIP_TOKENIZER_CHECK_KEY = "verl_sod.skip_tokenizer_check"
PREPARE_HINT = "prepare one with `python -m verl_sod.data prepare NAME --input FILE --output DIR`"


def _error(message: str) -> Exception:

    return ConfigError(message)


def is_local(path: str) -> bool:
    """A filesystem path (as opposed to a Hugging Face hub id)."""
    return path.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(path))


def resolve_model_dir(path: str) -> str | None:
    """A local directory for ``path``: itself, or the cached snapshot of a hub id; None if neither."""
    if is_local(path):
        local = os.path.expanduser(path)
        return local if os.path.isdir(local) else None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), a malformed id, no huggingface_hub
        return None


def model_paths(config: DictConfig) -> dict[str, Any]:
    """``key -> path`` of the student and of every teacher the config launches."""
    paths = {"actor_rollout_ref.model.path": config.actor_rollout_ref.model.path}
    if config.distillation.enabled:
        for name, teacher in config.distillation.teacher_models.items():
            paths[f"distillation.teacher_models.{name}.model_path"] = teacher.get("model_path")
    return paths


def check_model_paths(config: DictConfig) -> None:
    """Local model paths must be model directories (a config.json at least)."""
    for key, path in model_paths(config).items():
        if path is None:
            raise _error(f"{key} is not set: point it at a Hugging Face model directory or hub id.")
        local = os.path.expanduser(str(path))
        if not is_local(str(path)):
            continue
        if not os.path.isdir(local):
            raise _error(f"{key}={path}: no such directory. Set {key} to an existing model directory.")
        if not os.path.isfile(os.path.join(local, "config.json")):
            found = sorted(os.listdir(local))[:5]
            raise _error(
                f"{key}={path}: no config.json in that directory (it holds {found or 'nothing'}; an "
                f"unfinished download or the wrong folder?). Set {key} to a Hugging Face model directory "
                "(config.json, tokenizer files and weights)."
            )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_vocab(key: str, path: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from config.json alone and compare that
        raise _error(
            f"{key}: cannot load a tokenizer from {path} (none of {', '.join(TOKENIZER_FILES)}). Point "
            f"{key} at a model directory with its tokenizer files."
        )
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False).get_vocab()
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError by case
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise _error(
            f"{key}: cannot load a tokenizer from {path} ({first}). Point {key} at a model directory "
            "with tokenizer files (tokenizer.json or vocab files, tokenizer_config.json)."
        ) from None


def _skip_requested(config: DictConfig) -> bool:
    from omegaconf import OmegaConf

    return bool(OmegaConf.select(config, SKIP_TOKENIZER_CHECK_KEY, default=False))


#: tokenizer families told apart by vocabulary size and a few marker token ids
KNOWN_TOKENIZERS: dict[str, tuple[int, dict[str, int]]] = {
    "Qwen3": (151_669, {"<|im_start|>": 151644, "<tool_call>": 151657, "<think>": 151667}),
    "SmolLM2": (49_152, {"<|im_start|>": 1, "<|im_end|>": 2, "<jupyter_code>": 13}),
}


def describe_tokenizer(vocab: dict[str, int]) -> str:
    """``"Qwen3 tokenizer, 151669 tokens"`` for a known family, else the size alone."""
    for family, (size, markers) in KNOWN_TOKENIZERS.items():
        if len(vocab) == size and all(vocab.get(tok) == idx for tok, idx in markers.items()):
            return f"{family} tokenizer, {size} tokens"
    return f"unrecognised tokenizer, {len(vocab)} tokens"


def check_teacher_tokenizer(config: DictConfig) -> None:
    """The teacher scores the student's token ids: a different vocabulary is silently wrong.

    Both models are looked up locally (a directory, or a hub id's snapshot in the Hugging Face
    cache). If either cannot be found the pair cannot be compared and the launch stops, unless
    ``+verl_sod.skip_tokenizer_check=true`` is set.
    """
    if not config.distillation.enabled:
        return
    model = config.actor_rollout_ref.model
    student_key = "actor_rollout_ref.model." + ("tokenizer_path" if model.get("tokenizer_path") else "path")
    pairs = {student_key: str(model.get("tokenizer_path") or model.path)}
    for name, teacher in config.distillation.teacher_models.items():
        pairs[f"distillation.teacher_models.{name}.model_path"] = str(teacher.model_path)
    resolved = {key: resolve_model_dir(path) for key, path in pairs.items()}
    missing = [key for key, local in resolved.items() if local is None]
    if missing:
        if _skip_requested(config):
            logger.warning("teacher/student tokenizer check skipped (%s=true)", SKIP_TOKENIZER_CHECK_KEY)
            return
        named = ", ".join(f"{key}={pairs[key]}" for key in missing)
        raise _error(
            f"cannot compare the teacher's and the student's tokenizers: {named} is neither a local "
            "directory nor in the Hugging Face cache. Download it first (`hf download ID`), or add "
            f"+{SKIP_TOKENIZER_CHECK_KEY}=true to launch without the check."
        )
    student_vocab = _load_vocab(student_key, str(resolved[student_key]))
    for key, local in resolved.items():
        if key == student_key:
            continue
        teacher_vocab = _load_vocab(key, str(local))
        if teacher_vocab != student_vocab:
            differ = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()))[:3]
            raise _error(
                f"{key}={pairs[key]} ({describe_tokenizer(teacher_vocab)}) and the student "
                f"{pairs[student_key]} ({describe_tokenizer(student_vocab)}) use different tokenizers "
                f"(e.g. {differ}). The teacher scores "
                "the student's token ids, so they must share one vocabulary: pick a teacher from the "
                "student's model family."
            )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, ListConfig | list | tuple):
        return list(value)
    return [value]


def _verl_default(key: str) -> Any:

    return verl_default(key)


def check_data_files(config: DictConfig) -> None:
    """``data.train_files`` and ``data.val_files`` exist and hold the prompt column."""
    prompt_key = str(config.data.get("prompt_key") or "prompt")
    for key in ("data.train_files", "data.val_files"):
        value = config.data.get(key.split(".", 1)[1])
        files = [str(f) for f in _as_list(value) if f is not None and str(f).strip()]
        if not files:
            raise _error(f"{key} is not set: {PREPARE_HINT}, then add {key}=/abs/path/NAME.parquet.")
        default = " (verl's default: the config never set it)" if value == _verl_default(key) else ""
        for name in files:
            if "://" in name:  # hdfs:// and other remote files are fetched by verl itself
                continue
            path = Path(os.path.expanduser(name))
            if not path.is_file():
                raise _error(
                    f"{key}={name}: no such file{default}. Set {key} to a parquet file; {PREPARE_HINT}."
                )
            _check_prompt_column(key, path, prompt_key)


def _check_prompt_column(key: str, path: Path, prompt_key: str) -> None:
    if path.suffix.lower() != ".parquet":
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise _error(
            f"{key}={path}: not a readable parquet file ({exc}). {PREPARE_HINT[0].upper()}{PREPARE_HINT[1:]}."
        ) from None
    if prompt_key not in names:
        raise _error(
            f"{key}={path}: no '{prompt_key}' column (data.prompt_key; columns: {names[:8]}). Is it a raw "
            f"benchmark file? {PREPARE_HINT[0].upper()}{PREPARE_HINT[1:]}."
        )


def check_tool_files(config: DictConfig) -> None:
    """Tool config / function tool files exist; an agent loop without any tool gets a warning."""
    multi_turn = config.actor_rollout_ref.rollout.multi_turn
    prefix = "actor_rollout_ref.rollout.multi_turn."
    given = {k: multi_turn.get(k) for k in ("tool_config_path", "function_tool_path") if multi_turn.get(k)}
    for key, value in given.items():
        path = str(value)
        if "://" not in path and not os.path.isfile(os.path.expanduser(path)):
            raise _error(
                f"{prefix}{key}={path}: no such file. Pass an absolute path (Ray workers resolve it from "
                "their own working directory), e.g. $PWD/verl_sod/config/tools/code_interpreter.yaml."
            )
    agent = config.actor_rollout_ref.rollout.get("agent", {}).get("default_agent_loop")
    if not given and agent in ("tool_agent", "sod_tool_agent"):
        logger.warning(
            "%s runs without any tool: set %stool_config_path (or function_tool_path) to give the model one",
            agent,
            prefix,
        )


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def check_attention(config: DictConfig) -> None:
    """A CUDA launch asking for flash_attention_2 (verl's default) needs the flash_attn package."""
    if str(config.trainer.get("device", "cuda")) != "cuda":
        return
    model = config.actor_rollout_ref.model
    impl = (model.get("override_config") or {}).get("attn_implementation", "flash_attention_2")
    if impl != "flash_attention_2" or flash_attn_installed():
        return
    why = (
        "actor_rollout_ref.model.use_remove_padding=true packs sequences for flash-attn's varlen kernels"
        if model.get("use_remove_padding")
        else "the actor would fail to load its model"
    )
    raise _error(
        "actor_rollout_ref.model.override_config.attn_implementation is flash_attention_2 (verl's default) "
        f"but the flash_attn package is not installed ({why}). Install it (`pip install flash-attn "
        "--no-build-isolation`, built for your torch and CUDA), or add "
        "actor_rollout_ref.model.use_remove_padding=false "
        "++actor_rollout_ref.model.override_config.attn_implementation=sdpa."
    )
