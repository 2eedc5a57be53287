"""The tiny-model SFT spec: its learning-rate schedule, range checks and cache-key stability."""

from __future__ import annotations

import itertools

import pytest

from verl_sod.tiny import assets, sft

#: the fields that keyed the cache before the schedule existed (chain_calc's cached models)
HISTORICAL = {"model", "steps", "batch_size", "lr", "seed", "content_weight", "version"}


def test_constant_schedule_warms_up_then_stays():
    spec = sft.SFTSpec(assets.TEACHER, steps=100)
    factors = [sft._lr_factor(spec, s) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 20) and factors[19] == 1.0 and set(factors[19:]) == {1.0}


def test_cosine_decays_to_the_floor():
    spec = sft.SFTSpec(assets.TEACHER, steps=200, cosine=True, min_lr_ratio=0.1)
    factors = [sft._lr_factor(spec, s) for s in range(200)]
    assert factors[0] < factors[19]
    after = factors[19:]
    assert all(a >= b for a, b in itertools.pairwise(after))
    assert factors[-1] == pytest.approx(0.1) and factors[100] == pytest.approx(0.55, abs=0.01)


def test_cache_key_of_the_constant_schedule_is_unchanged():
    assert set(sft._cache_fields(sft.SFTSpec(assets.STUDENT, steps=10))) == HISTORICAL
    cosine = sft._cache_fields(sft.SFTSpec(assets.STUDENT, steps=10, cosine=True))
    assert set(cosine) == HISTORICAL | {"cosine", "min_lr_ratio"}


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"content_weight": -1.0}, {"min_lr_ratio": 1.5}]
)
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(ValueError, match="SFTSpec"):
        sft.SFTSpec(assets.STUDENT, **{"steps": 10, **kwargs})


def test_the_cache_key_covers_every_conversation():
    """Changing any conversation (not only the first) retrains: a stale model is never reused."""
    spec = sft.SFTSpec(assets.STUDENT, steps=10)
    data = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    changed = [*data[:3], [{"role": "user", "content": "other"}]]
    key = sft.cache_dir(spec, "m", data, "sample")
    assert key == sft.cache_dir(spec, "m", [list(c) for c in data], "sample")
    assert key != sft.cache_dir(spec, "m", changed, "sample")
    assert key != sft.cache_dir(spec, "m", data[:3], "sample")
    assert key != sft.cache_dir(spec, "m", data, "another template")
