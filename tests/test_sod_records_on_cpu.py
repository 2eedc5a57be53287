"""Per-step SOD records (verl_sod.diagnostics): contents against a loop oracle, sampling, config.

The micro-batches are shaped like the fields the trainer fetches from TransferQueue (jagged
nested tensors, full-sequence teacher log-probs, response-aligned old log-probs); the oracle is a
plain per-token loop over the padded ground truth. The end-to-end check that records written by a
real run agree with the loss's own metrics is in test_e2e_trainers_on_cpu.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from builders import make_micro_batch, nested
from helpers import TEACHER_OVERRIDES
from oracle import oracle_row_step_ids
from verl.utils.config import omega_conf_to_dataclass

from verl_sod.algos.step_types import step_types_BK
from verl_sod.diagnostics.records import (
    build_records,
    record_metrics,
    records_file,
    sample_keys,
    write_records,
)
from verl_sod.diagnostics.trainer import SOD_TRAINER_MODE, records_settings
from verl_sod.fields import (
    AGENT_EXTRA_KEY,
    OUTCOME_CODES,
    REWARD_EXTRA_INFO_KEY,
    STEP_FAULTS_KEY,
    STEP_IDS_KEY,
    STEP_OUTCOMES_KEY,
    STEP_TYPE_NAMES,
    TOOL_STATS_FIELDS,
    TOOL_STATS_KEY,
    TRAJECTORY_EXTRA_FIELD,
)
from verl_sod.preflight import ConfigError, _resolve_sod_records
from verl_sod.presets import compose


def _loss_config(*overrides: str):
    return omega_conf_to_dataclass(
        compose("sod", [*TEACHER_OVERRIDES, *overrides]).distillation
    ).distillation_loss


def _with_agent_fields(data, truth, seed: int = 0):
    """Add rewards, explicit step ids (mask runs), outcomes and tool stats to a micro-batch."""
    gen = torch.Generator().manual_seed(seed)
    mask = truth["mask"]
    B = mask.shape[0]
    lens = data["response_mask"].offsets().diff().tolist()
    step_rows = [torch.tensor(oracle_row_step_ids(mask[b, : lens[b]])) for b in range(B)]
    n_steps = [int(r.max()) + 1 if (r >= 0).any() else 0 for r in step_rows]
    outcomes = [torch.randint(0, 4, (max(n, 1),), generator=gen) for n in n_steps]
    rewards = [torch.zeros(lens[b]) for b in range(B)]
    for b in range(B):
        rewards[b][-1] = float(b % 2)
    data[STEP_IDS_KEY] = nested(step_rows)
    data[STEP_OUTCOMES_KEY] = nested(outcomes)
    data[TOOL_STATS_KEY] = torch.arange(B * len(TOOL_STATS_FIELDS)).reshape(B, -1)
    data["rm_scores"] = nested(rewards)
    return data, outcomes


def _oracle_steps(truth, b):
    """(tokens, d, w) per step of row b by loops over the padded ground truth."""
    mask = truth["mask"][b]
    ids = oracle_row_step_ids(mask)
    old, lp_t = truth["old"][b].tolist(), truth["lp_t"][b].tolist()
    out, d_first = [], None
    for k in sorted({i for i in ids if i >= 0}):
        pos = [i for i, s in enumerate(ids) if s == k]
        d = math.fsum(abs(old[i] - lp_t[i]) for i in pos) / len(pos)
        d_first = d if d_first is None else d_first
        out.append((len(pos), d, min((d_first + 1e-6) / (d + 1e-6), 1.2)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_records_match_loop_oracle(seed):
    data, _, truth = make_micro_batch(seed=seed, B=6)
    data, outcomes = _with_agent_fields(data, truth, seed)
    uids = [f"u{b}" for b in range(6)]
    records = build_records(_loss_config(), data, uids, step=7)
    assert [r["uid"] for r in records] == uids
    names = {code: name for name, code in OUTCOME_CODES.items()}
    for b, rec in enumerate(records):
        assert rec["step"] == 7 and rec["weighting"] == "divergence"
        assert rec["reward"] == float(b % 2)
        assert rec["response_tokens"] == int(truth["mask"][b].sum())
        want = _oracle_steps(truth, b)
        assert len(rec["steps"]) == len(want)
        for k, (step, (tokens, d, w)) in enumerate(zip(rec["steps"], want, strict=True)):
            assert step["k"] == k and step["tokens"] == tokens
            assert step["d"] == pytest.approx(d, abs=2e-6)
            assert step["w"] == pytest.approx(w, abs=2e-6) and step["w_applied"] == step["w"]
            assert step["outcome"] == names[int(outcomes[b][k])]
        attenuated = [s["w"] < 0.95 for s in rec["steps"]]
        expected = "stable" if not any(attenuated) else ("erroneous" if attenuated[-1] else "recovery")
        assert rec["pattern"] == expected
        assert list(rec["tool"].values()) == data[TOOL_STATS_KEY][b].tolist()
        assert list(rec["tool"]) == list(TOOL_STATS_FIELDS)


def test_records_without_agent_fields_use_mask_runs_and_no_tool_stats():
    data, _, truth = make_micro_batch(seed=4, B=4)
    lens = data["response_mask"].offsets().diff().tolist()
    data["rm_scores"] = nested([torch.full((n,), 0.25) for n in lens])  # summed over the response
    records = build_records(_loss_config(), data, ["a", "b", "c", "d"], step=1)
    for b, rec in enumerate(records):
        assert rec["tool"] is None
        assert all(s["outcome"] == "none" for s in rec["steps"])
        assert [s["tokens"] for s in rec["steps"]] == [t for t, _, _ in _oracle_steps(truth, b)]
        assert rec["reward"] == pytest.approx(0.25 * lens[b])


def test_padding_row_is_an_empty_record():
    data, _, _ = make_micro_batch(seed=5, B=4, padding_row=True)
    data["rm_scores"] = nested([torch.zeros(n) for n in data["response_mask"].offsets().diff().tolist()])
    records = build_records(_loss_config(), data, list("abcd"), step=1)
    assert records[-1]["pattern"] == "empty" and records[-1]["steps"] == []
    assert all(r["steps"] for r in records[:-1])


def test_uniform_weighting_records_applied_weights_beside_the_papers():
    data, _, truth = make_micro_batch(seed=6, B=6)
    data, _ = _with_agent_fields(data, truth)
    records = build_records(
        _loss_config("distillation.distillation_loss.sod_weighting=uniform"), data, list("abcdef"), step=2
    )
    steps = [s for r in records for s in r["steps"]]
    assert all(s["w_applied"] == 1.0 for s in steps)
    assert any(s["w"] < 0.99 for s in steps), "the paper's weights are still recorded"
    assert {r["weighting"] for r in records} == {"uniform"}


def test_sample_keys_is_stable_per_step_and_bounded():
    keys = [f"k{i}" for i in range(50)]
    a, b = sample_keys(keys, 10, step=3), sample_keys(keys, 10, step=3)
    assert a == b and a == sorted(a) and len(set(a)) == 10 and all(0 <= i < 50 for i in a)
    assert sample_keys(keys, 10, step=4) != a
    assert sample_keys(keys, 50, step=1) == list(range(50)) == sample_keys(keys, 99, step=1)
    assert sample_keys(keys, 0, step=1) == [] and sample_keys([], 5, step=1) == []


def test_write_records_round_trips_one_json_object_per_line(tmp_path):
    records = [{"step": 3, "uid": "x", "steps": [{"k": 0, "d": 0.5}]}, {"step": 3, "uid": "y", "steps": []}]
    path = write_records(records, records_file(tmp_path / "sod_steps", 3))
    assert path.name == "step_000003.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    assert not list(path.parent.glob("*.tmp"))


def _raw(*overrides: str):
    return compose("sod", [*TEACHER_OVERRIDES, *overrides])


def test_sod_preset_records_by_default_through_the_sod_trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _raw()
    assert cfg.trainer.v1.trainer_mode == SOD_TRAINER_MODE
    _resolve_sod_records(cfg)
    settings = records_settings(cfg)
    assert settings is not None and settings.per_step == 64
    assert settings.directory == str(tmp_path / "sod_steps")


def test_records_go_beside_verl_rollout_dumps(tmp_path):
    cfg = _raw(f"trainer.rollout_data_dir={tmp_path}/rollouts")
    _resolve_sod_records(cfg)
    assert cfg.distillation.distillation_loss.sod_records_dir == f"{tmp_path}/rollouts/sod_steps"


def test_records_need_the_sod_trainer():
    cfg = _raw("trainer.v1.trainer_mode=sync")
    with pytest.raises(ConfigError, match=r"trainer\.v1\.trainer_mode=sod_sync"):
        _resolve_sod_records(cfg)
    _resolve_sod_records(
        _raw("trainer.v1.trainer_mode=sync", "distillation.distillation_loss.sod_records_per_step=0")
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["distillation.distillation_loss.sod_records_per_step=0"],
        ["distillation.enabled=false"],
    ],
)
def test_no_records_when_off(overrides):
    assert records_settings(_raw(*overrides)) is None


def test_records_setting_is_range_checked():
    with pytest.raises(Exception, match=r"sod_records_per_step must be an integer >= 0, got -1"):
        _loss_config("distillation.distillation_loss.sod_records_per_step=-1")


# ----------------------------------------------------------------------------- batch-level weights
class FakeTQ:
    """TransferQueue stand-in: per-key rows; a missing field raises like a real fetch would."""

    def __init__(self, data, keys):
        self.rows = {k: {} for k in keys}
        self.fields = [n for n in data.keys() if isinstance(data[n], torch.Tensor)]  # noqa: SIM118
        for name in self.fields:
            for k, row in zip(keys, data[name].unbind(), strict=True):
                self.rows[k][name] = row
        self.fetches: list[int] = []

    def kv_batch_get(self, keys, partition_id, select_fields):
        self.fetches.append(len(keys))
        out = {f: nested([self.rows[k][f] for k in keys]) for f in select_fields}
        return __import__("tensordict").TensorDict(out, batch_size=[len(keys)])

    def kv_batch_put(self, keys, partition_id, fields):
        for name in fields.keys():  # noqa: SIM118
            for k, row in zip(keys, fields[name].unbind(), strict=True):
                self.rows[k][name] = row
        return Meta(list(keys), partition_id, [{} for _ in keys])


class Meta:
    def __init__(self, keys, partition_id, tags):
        self.keys, self.partition_id, self.tags = keys, partition_id, tags


def _trainer(monkeypatch, tmp_path, weighting: str, data, keys):
    import verl_sod.diagnostics.trainer as trainer_mod
    from verl_sod.diagnostics.trainer import SODRecordsTrainer

    fake = FakeTQ(data, keys)
    monkeypatch.setattr(trainer_mod, "tq", fake)
    monkeypatch.setattr(trainer_mod, "BLOCK_ROWS", 3)  # several blocks: the weights still span all rows
    updates = []
    monkeypatch.setattr(
        trainer_mod.PPOTrainerSync,
        "_update_actor",
        lambda self, batch, metrics: updates.append(batch) or batch,
    )
    trainer = SODRecordsTrainer.__new__(SODRecordsTrainer)
    trainer.config = _raw(
        f"distillation.distillation_loss.sod_weighting={weighting}",
        f"distillation.distillation_loss.sod_records_dir={tmp_path}",
        "distillation.distillation_loss.sod_records_per_step=4",
    )
    trainer.global_steps = 5
    trainer.tokenizer = None  # verl's trainer sets it in __init__, which this stand-in skips
    return trainer, fake, updates


@pytest.mark.parametrize("weighting", ["position_median", "random"])
def test_trainer_carries_step_batch_weights_and_records_report_them(monkeypatch, tmp_path, weighting):
    from verl_sod.algos.batch_weights import batch_step_weights
    from verl_sod.fields import STEP_WEIGHTS_KEY

    data, _, truth = make_micro_batch(seed=3, B=10)
    data, _ = _with_agent_fields(data, truth)
    keys = [f"k{b}" for b in range(10)]
    trainer, fake, updates = _trainer(monkeypatch, tmp_path, weighting, data, keys)
    metrics: dict = {}
    trainer._update_actor(Meta(keys, "train", [{} for _ in keys]), metrics)
    assert len(updates) == 1 and updates[0].keys == keys, "verl's update runs on the stored batch"
    assert fake.fetches == [3, 3, 3, 1] and "timing_s/sod_step_weights" in metrics
    loss_cfg = trainer.config.distillation.distillation_loss
    want = batch_step_weights(loss_cfg, [data], step=5)
    for k, w in zip(keys, want, strict=True):
        assert torch.equal(fake.rows[k][STEP_WEIGHTS_KEY], w)
    # the records of a 4-row sample show the weights the actor applied (whole-step reference) ...
    trainer._write_sod_records(Meta(keys, "train", [{} for _ in keys]), records_settings(trainer.config))
    records = [json.loads(x) for x in records_file(tmp_path, 5).read_text().splitlines()]
    assert len(records) == 4
    for rec in records:
        carried = fake.rows[rec["uid"]][STEP_WEIGHTS_KEY].tolist()
        assert [s["w_applied"] for s in rec["steps"]] == [round(carried[s["k"]], 6) for s in rec["steps"]]
    # ... which a reference recomputed over the sample alone would not give
    sample = fake.kv_batch_get([r["uid"] for r in records], "train", fake.fields)
    local = batch_step_weights(loss_cfg, [sample], step=5)
    assert any(
        not torch.equal(w, fake.rows[r["uid"]][STEP_WEIGHTS_KEY]) for w, r in zip(local, records, strict=True)
    )


def test_trainer_carries_nothing_for_per_row_weightings(monkeypatch, tmp_path):
    data, _, _ = make_micro_batch(seed=3, B=4)
    keys = list("abcd")
    trainer, fake, updates = _trainer(monkeypatch, tmp_path, "divergence", data, keys)
    trainer._update_actor(Meta(keys, "train", [{} for _ in keys]), {})
    assert fake.fetches == [] and len(updates) == 1


@pytest.mark.parametrize(
    ("source", "top_p", "top_k", "warns"),
    [
        ("rollout_log_probs", 0.9, -1, True),
        ("rollout_log_probs", 1.0, 20, True),
        ("rollout_log_probs", 1.0, -1, False),
        ("rollout_log_probs", None, None, False),
        ("old_log_probs", 0.5, 10, False),
    ],
)
def test_rollout_log_probs_under_filtered_sampling_warns(source, top_p, top_k, warns):
    from verl_sod.algos.sod_config import divergence_source_warning

    message = divergence_source_warning(source, top_p, top_k, "vllm")
    assert (message is not None) == warns
    if warns:
        assert "sod_divergence_source=rollout_log_probs" in message and "top_p=1 top_k=-1" in message


class _DigitTokenizer:
    """Token ids 0..9 decode to digits (content), 10..19 to words, 20 to a space."""

    def __len__(self) -> int:
        return 21

    def batch_decode(self, ids):
        return [str(i[0]) if i[0] < 10 else (" " if i[0] == 20 else f"w{i[0]}") for i in ids]


def _agent_extra(faults_per_row, extras):
    from tensordict import NonTensorData, NonTensorStack

    rows = [
        {AGENT_EXTRA_KEY: {STEP_FAULTS_KEY: faults}, REWARD_EXTRA_INFO_KEY: extra}
        for faults, extra in zip(faults_per_row, extras, strict=True)
    ]
    return NonTensorStack(*[NonTensorData(r) for r in rows], batch_size=[len(rows)])


def test_records_carry_step_types_fault_labels_content_d_and_reward_extra_info():
    data, _, truth = make_micro_batch(seed=8, B=5)
    data, outcomes = _with_agent_fields(data, truth, seed=8)
    lens = data["response_mask"].offsets().diff().tolist()
    gen = torch.Generator().manual_seed(8)
    tokens = [torch.randint(0, 21, (n,), generator=gen) for n in lens]
    data["responses"] = nested(tokens)
    faults = [[f"f{b}{k}" for k in range(len(outcomes[b]))] for b in range(5)]
    extras = [{"success": float(b % 2), "horizon": 8, "label": "text is dropped"} for b in range(5)]
    data[TRAJECTORY_EXTRA_FIELD] = _agent_extra(faults, extras)
    records = build_records(_loss_config(), data, list("abcde"), step=3, tokenizer=_DigitTokenizer())
    for b, rec in enumerate(records):
        assert rec["extra"] == {"success": float(b % 2), "horizon": 8.0}
        ids = oracle_row_step_ids(truth["mask"][b])
        want_types = [STEP_TYPE_NAMES[c] for c in step_types_BK(outcomes[b].unsqueeze(0))[0].tolist()]
        old, lp_t = truth["old"][b].tolist(), truth["lp_t"][b].tolist()
        for step in rec["steps"]:
            k = step["k"]
            assert step["type"] == want_types[k] and step["fault"] == faults[b][k]
            pos = [i for i, s in enumerate(ids) if s == k and int(tokens[b][i]) < 10]
            assert step["content_tokens"] == len(pos)
            if pos:
                d = math.fsum(abs(old[i] - lp_t[i]) for i in pos) / len(pos)
                assert step["d_content"] == pytest.approx(d, abs=2e-6)
            else:
                assert step["d_content"] is None
    metrics = record_metrics(records)
    assert metrics["sod_records/agent/d/all"] == pytest.approx(
        sum(s["d"] for r in records for s in r["steps"]) / sum(len(r["steps"]) for r in records)
    )
    assert any(k.startswith("sod_records/agent/success_h8_") for k in metrics)


def test_records_without_tokenizer_or_extra_fields_have_no_content_d_and_empty_extra():
    data, _, truth = make_micro_batch(seed=9, B=3)
    data, _ = _with_agent_fields(data, truth, seed=9)
    records = build_records(_loss_config(), data, list("abc"), step=1)
    assert all(r["extra"] == {} for r in records)
    assert all("d_content" not in s and "fault" not in s and "type" in s for r in records for s in r["steps"])
