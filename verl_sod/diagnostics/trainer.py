"""``trainer.v1.trainer_mode=sod_sync``: verl's synchronous V1 trainer plus SOD's per-step work.

Registered with verl's own trainer registry (``verl.trainer.ppo.v1.register_trainer``). It is
verl's ``PPOTrainerSync`` with two overrides; nothing of ``fit()`` or ``step()`` is copied:

* ``_update_actor``: for a batch-level ``sod_weighting`` (``random``, ``position_median``), just
  before verl's actor update, while the step's trajectories (with ``old_log_probs`` and the
  teacher's log-probs) are in TransferQueue, it computes the weights over the whole step batch
  (:func:`verl_sod.algos.batch_weights.batch_step_weights`, rows fetched in blocks of
  :data:`BLOCK_ROWS`) and stores them per trajectory as the field ``sod_step_weights``
  (:data:`verl_sod.fields.STEP_WEIGHTS_KEY`). verl then splits the batch into micro-batches
  (dynamic batching included); the ``sod`` loss applies the carried weights, so a row's weights do
  not depend on its micro-batch. Cost logged as ``timing_s/sod_step_weights``.
* ``step``: after the update, it fetches a sample of the step's trajectories and writes
  :mod:`verl_sod.diagnostics.records` to ``<records dir>/step_NNNNNN.jsonl``; the records read the
  same carried weights, so ``w_applied`` is what the actor applied.

Records are on when ``distillation.distillation_loss.loss_mode=sod`` and ``sod_records_per_step``
> 0. The cost is logged per step as ``timing_s/sod_records`` (fetch + weights + write, in the
driver, after the update and outside the workers) and the count as ``sod_records/trajectories``.
At start-up the trainer warns when d_k is measured on ``rollout_log_probs`` under top-p/top-k
sampling (:func:`verl_sod.algos.sod_config.divergence_source_warning`).
The agent metrics of the recorded sample (success by horizon with / without faults, per fault type
P(next call ok) and P(success), cascade lengths, d on all vs content tokens by step type;
:func:`verl_sod.diagnostics.records.record_metrics`) are logged as ``sod_records/agent/*``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_sod.algos.batch_weights import batch_step_weights
from verl_sod.algos.sod_config import divergence_source_warning
from verl_sod.algos.step_weightings import is_batch_level
from verl_sod.diagnostics.records import (
    AGENT_FIELDS,
    REQUIRED_FIELDS,
    WEIGHT_FIELDS,
    build_records,
    record_metrics,
    records_file,
    sample_keys,
    write_records,
)
from verl_sod.fields import STEP_IDS_KEY, STEP_WEIGHTS_KEY

logger = logging.getLogger(__name__)

SOD_TRAINER_MODE = "sod_sync"
#: rows per TransferQueue fetch when computing batch-level weights (bounds the driver's memory)
BLOCK_ROWS = 256


@dataclass(frozen=True)
class RecordsSettings:
    per_step: int
    directory: str
    loss_config: Any  # the DictConfig distillation.distillation_loss


def records_settings(config: Any) -> RecordsSettings | None:
    """What to record under ``config`` (the trainer's resolved DictConfig), or None for nothing."""
    loss = sod_loss_config(config)
    per_step = int(loss.get("sod_records_per_step", 0) or 0) if loss is not None else 0
    if loss is None or per_step <= 0:
        return None
    directory = loss.get("sod_records_dir")
    if not directory:
        raise ValueError(
            "distillation.distillation_loss.sod_records_dir is unset: launch through "
            "`python -m verl_sod.train` (its preflight resolves it) or set an absolute path."
        )
    return RecordsSettings(per_step, str(directory), loss)


def sod_loss_config(config: Any) -> Any | None:
    """``distillation.distillation_loss`` when the run uses the ``sod`` loss, else None."""
    dist = config.get("distillation")
    if not dist or not dist.get("enabled") or dist.distillation_loss.get("loss_mode") != "sod":
        return None
    return dist.distillation_loss


def batch_level_loss_config(config: Any) -> Any | None:
    """The ``sod`` loss config when its ``sod_weighting`` is batch-level (weights carried), else None."""
    loss = sod_loss_config(config)
    return loss if loss is not None and is_batch_level(str(loss.get("sod_weighting", ""))) else None


@register_trainer(SOD_TRAINER_MODE)
class SODRecordsTrainer(PPOTrainerSync):
    """verl's ``sync`` trainer plus SOD's batch-level weights and records (see the module docstring)."""

    _agent_fields_missing: bool = False
    _sod_record_metrics: dict = {}  # noqa: RUF012  (replaced, never mutated)

    def init(self) -> None:
        super().init()
        loss = sod_loss_config(self.config)
        rollout = self.config.actor_rollout_ref.rollout
        if loss is not None:
            message = divergence_source_warning(
                str(loss.get("sod_divergence_source", "old_log_probs")),
                rollout.get("top_p", 1.0),
                rollout.get("top_k", -1),
                str(rollout.get("name", "")),
            )
            if message:
                logger.warning(message)

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        settings = records_settings(self.config)
        if settings is not None:
            t0 = time.perf_counter()
            metrics["sod_records/trajectories"] = self._write_sod_records(batch, settings)
            metrics.update(self._sod_record_metrics)
            metrics["timing_s/sod_records"] = time.perf_counter() - t0
        return batch

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        loss = batch_level_loss_config(self.config)
        if loss is not None:
            t0 = time.perf_counter()
            batch = self._put_step_weights(batch, loss)
            metrics["timing_s/sod_step_weights"] = time.perf_counter() - t0
        return super()._update_actor(batch, metrics)

    def _put_step_weights(self, batch: Any, loss: Any) -> Any:
        """Compute the batch-level weights of every row of ``batch`` and store them in TransferQueue."""
        source = str(loss.get("sod_divergence_source", "old_log_probs"))
        fields = [*WEIGHT_FIELDS, source]
        keys = list(batch.keys)
        blocks = (
            self._fetch(batch, keys[i : i + BLOCK_ROWS], fields, (STEP_IDS_KEY,))
            for i in range(0, len(keys), BLOCK_ROWS)
        )
        rows = batch_step_weights(loss, blocks, self.global_steps)
        nested = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
        td = TensorDict({STEP_WEIGHTS_KEY: nested}, batch_size=[len(keys)])
        return tq.kv_batch_put(keys=keys, partition_id=batch.partition_id, fields=td)

    def _fetch(self, batch: Any, keys: list[str], fields: list[str], optional: tuple[str, ...]) -> Any:
        """``fields`` (+ ``optional`` agent-loop fields when the rows have them) of ``keys``."""
        if not self._agent_fields_missing and optional:
            try:
                return tq.kv_batch_get(
                    keys=keys, partition_id=batch.partition_id, select_fields=fields + list(optional)
                )
            except Exception as err:  # rows without sod_tool_agent fields: go on without them
                logger.warning("SOD: no agent-loop fields (%s); going on without them.", err)
                self._agent_fields_missing = True
        return tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)

    def _write_sod_records(self, batch: Any, settings: RecordsSettings) -> int:
        tags = zip(batch.keys, batch.tags, strict=True)
        real = [key for key, tag in tags if not tag.get("is_padding", False)]
        chosen = [real[i] for i in sample_keys(real, settings.per_step, self.global_steps)]
        self._sod_record_metrics = {}
        if not chosen:
            return 0
        source = str(settings.loss_config.get("sod_divergence_source", "old_log_probs"))
        fields = [*REQUIRED_FIELDS, source]
        if batch_level_loss_config(self.config) is not None:
            fields.append(STEP_WEIGHTS_KEY)  # the weights the actor applied, as it applied them
        data = self._fetch(batch, chosen, fields, AGENT_FIELDS)
        records = build_records(
            settings.loss_config, data, chosen, self.global_steps, tokenizer=self.tokenizer
        )
        write_records(records, records_file(settings.directory, self.global_steps))
        self._sod_record_metrics = record_metrics(records)
        return len(records)
