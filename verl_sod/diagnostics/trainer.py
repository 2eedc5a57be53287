"""``trainer.v1.trainer_mode=sod_sync``: verl's synchronous V1 trainer plus per-step SOD records.

Registered with verl's own trainer registry (``verl.trainer.ppo.v1.register_trainer``). It is
verl's ``PPOTrainerSync`` unchanged except for one override: after ``step()`` (rollout, rewards,
log-probs, advantages, actor update), while the step's trajectories are still in TransferQueue,
it fetches a sample of them and writes :mod:`verl_sod.diagnostics.records` to
``<records dir>/step_NNNNNN.jsonl``. Nothing of ``fit()`` is copied.

Records are on when ``distillation.distillation_loss.loss_mode=sod`` and ``sod_records_per_step``
> 0. The cost is logged per step as ``timing_s/sod_records`` (fetch + weights + write, in the
driver, after the update and outside the workers) and the count as ``sod_records/trajectories``.
The agent metrics of the recorded sample (success by horizon with / without faults, per fault type
P(next call ok) and P(success), cascade lengths, d on all vs content tokens by step type;
:func:`verl_sod.diagnostics.records.record_metrics`) are logged as ``sod_records/agent/*``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_sod.diagnostics.records import (
    AGENT_FIELDS,
    REQUIRED_FIELDS,
    build_records,
    record_metrics,
    records_file,
    sample_keys,
    write_records,
)

logger = logging.getLogger(__name__)

SOD_TRAINER_MODE = "sod_sync"


@dataclass(frozen=True)
class RecordsSettings:
    per_step: int
    directory: str
    loss_config: Any  # the DictConfig distillation.distillation_loss


def records_settings(config: Any) -> RecordsSettings | None:
    """What to record under ``config`` (the trainer's resolved DictConfig), or None for nothing."""
    dist = config.get("distillation")
    if not dist or not dist.get("enabled"):
        return None
    loss = dist.distillation_loss
    per_step = int(loss.get("sod_records_per_step", 0) or 0)
    if loss.get("loss_mode") != "sod" or per_step <= 0:
        return None
    directory = loss.get("sod_records_dir")
    if not directory:
        raise ValueError(
            "distillation.distillation_loss.sod_records_dir is unset: launch through "
            "`python -m verl_sod.train` (its preflight resolves it) or set an absolute path."
        )
    return RecordsSettings(per_step, str(directory), loss)


@register_trainer(SOD_TRAINER_MODE)
class SODRecordsTrainer(PPOTrainerSync):
    """verl's ``sync`` trainer that also writes per-step SOD records (see the module docstring)."""

    _agent_fields_missing: bool = False
    _sod_record_metrics: dict = {}  # noqa: RUF012  (replaced, never mutated)

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        settings = records_settings(self.config)
        if settings is not None:
            t0 = time.perf_counter()
            metrics["sod_records/trajectories"] = self._write_sod_records(batch, settings)
            metrics.update(self._sod_record_metrics)
            metrics["timing_s/sod_records"] = time.perf_counter() - t0
        return batch

    def _fetch(self, batch: Any, keys: list[str], settings: RecordsSettings) -> Any:
        source = str(settings.loss_config.get("sod_divergence_source", "old_log_probs"))
        fields = [*REQUIRED_FIELDS, source]
        if not self._agent_fields_missing:
            try:
                return tq.kv_batch_get(
                    keys=keys, partition_id=batch.partition_id, select_fields=fields + list(AGENT_FIELDS)
                )
            except Exception as err:  # rows without sod_tool_agent fields: record without them
                logger.warning("SOD records: no agent-loop fields (%s); recording without them.", err)
                self._agent_fields_missing = True
        return tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)

    def _write_sod_records(self, batch: Any, settings: RecordsSettings) -> int:
        tags = zip(batch.keys, batch.tags, strict=True)
        real = [key for key, tag in tags if not tag.get("is_padding", False)]
        chosen = [real[i] for i in sample_keys(real, settings.per_step, self.global_steps)]
        self._sod_record_metrics = {}
        if not chosen:
            return 0
        data = self._fetch(batch, chosen, settings)
        records = build_records(
            settings.loss_config, data, chosen, self.global_steps, tokenizer=self.tokenizer
        )
        write_records(records, records_file(settings.directory, self.global_steps))
        self._sod_record_metrics = record_metrics(records)
        return len(records)
