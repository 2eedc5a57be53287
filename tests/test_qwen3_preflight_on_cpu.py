"""The preflight tells Qwen3's real tokenizer from SmolLM2's and names both in its error."""

from __future__ import annotations

import pytest
from helpers import TEACHER_OVERRIDES, model_overrides
from transformers import AutoTokenizer

import verl_sod.register  # noqa: F401  (registers the sod loss that preset=sod composes)
from verl_sod.preflight import ConfigError, preflight
from verl_sod.preflight.files import describe_tokenizer
from verl_sod.presets import compose
from verl_sod.tiny import assets, real


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    from verl_sod.tasks.smollm2_text import write_parquet

    return {
        "data": write_parquet(tmp_path_factory.mktemp("data"), n_train=2, n_val=2)["train"],
        "qwen3": str(real.build_qwen3_model()),
        "qwen3_teacher": str(real.build_qwen3_model(real.RealTinySpec(seed=1))),
        "smollm2": str(real.prepare_smollm2()),
        "smollm2_student": str(real.build_smollm2_student()),
    }


def _config(dirs: dict[str, str], student: str, teacher: str):
    return compose("sod", [*TEACHER_OVERRIDES, *model_overrides(student, dirs["data"], teacher)])


def test_each_family_is_named(dirs):
    assert describe_tokenizer(real.qwen3_tokenizer().get_vocab()) == "Qwen3 tokenizer, 151669 tokens"
    smol = AutoTokenizer.from_pretrained(dirs["smollm2"]).get_vocab()
    assert describe_tokenizer(smol) == "SmolLM2 tokenizer, 49152 tokens"
    tiny = assets.build_tokenizer().get_vocab()
    assert describe_tokenizer(tiny) == f"unrecognised tokenizer, {len(tiny)} tokens"
    shuffled = dict(smol) | {"<|im_start|>": 2, "<|im_end|>": 1}  # same size, other ids
    assert describe_tokenizer(shuffled).startswith("unrecognised")


def test_a_smollm2_teacher_for_a_qwen3_student_is_refused_naming_both(dirs):
    with pytest.raises(ConfigError, match="different tokenizers") as err:
        preflight(_config(dirs, dirs["qwen3"], dirs["smollm2"]))
    message = str(err.value)
    assert f"{dirs['smollm2']} (SmolLM2 tokenizer, 49152 tokens)" in message
    assert f"{dirs['qwen3']} (Qwen3 tokenizer, 151669 tokens)" in message


def test_same_family_pairs_pass(dirs):
    preflight(_config(dirs, dirs["qwen3"], dirs["qwen3_teacher"]))
    preflight(_config(dirs, dirs["smollm2_student"], dirs["smollm2"]))
