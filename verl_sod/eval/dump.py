"""Read verl 0.9.1 validation dumps and regroup their samples per problem, optionally re-scoring.

verl's V1 trainer (``verl/trainer/ppo/v1/trainer_base.py``, ``_validate`` -> ``_write_generations``)
writes ``<trainer.validation_data_dir>/<global_step>.jsonl``, one line per generated sequence with
``input`` and ``output`` (decoded with ``skip_special_tokens=True``), ``gts``, ``score``, ``step``,
``reward`` and every key of the reward's ``reward_extra_info`` (``acc``, ``pred``, ...), plus
``uid`` = ``{prompt uid}_{session}_{index}``. Lines are sorted by that key, so the samples of one
prompt are adjacent. A session with several outputs (multi-output agent loops) repeats the final
output's score on every line; only its highest ``index`` is kept here. Dumps without ``uid`` (older
trainers) are grouped by ``input`` text.

``data_source`` is not part of verl's dump; it is read from the ``data_source`` key that
``verl_sod.eval.reward`` adds, else ``default_source``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_sod.eval.metrics import Sample

logger = logging.getLogger(__name__)
#: where a record was read (``file:line``), added by :func:`read_records`
WHERE_KEY = "_dump_line"


@dataclass
class Generation:
    """One dumped sample of one problem."""

    problem: str
    session: str
    data_source: str
    record: dict[str, Any]
    sample: Sample
    online_score: float
    rescored: dict[str, Any] | None = field(default=None)


def dump_files(generations: str | Path, step: int | None = None) -> list[Path]:
    """The ``*.jsonl`` dump of ``step`` in a directory (the latest step when ``None``), or a file."""
    path = Path(generations)
    if path.is_file():
        return [path]
    files = sorted(
        path.glob("*.jsonl"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0)
    )
    if not files:
        raise FileNotFoundError(f"no *.jsonl validation dump in {path}")
    if step is None:
        return [files[-1]]
    chosen = [p for p in files if p.stem == str(step)]
    if not chosen:
        raise FileNotFoundError(f"no dump for step {step} in {path}: {[p.name for p in files]}")
    return chosen


def read_records(files: Iterable[Path], skipped: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every JSON object line of the files, in order, each tagged with its ``file:line``.

    A line that is not a JSON object (a dump cut short by a killed run) is left out with a warning
    naming ``file:line``, and listed in ``skipped`` when given.
    """
    records = []
    for path in files:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    _skip(skipped, where, f"not valid JSON ({exc}; a truncated dump?)")
                    continue
                if not isinstance(record, dict):
                    _skip(skipped, where, "not a JSON object")
                    continue
                record[WHERE_KEY] = where
                records.append(record)
    return records


def _skip(skipped: list[dict[str, str]] | None, where: str, reason: str) -> None:
    logger.warning("%s: %s; line skipped", where, reason)
    if skipped is not None:
        skipped.append({"where": where, "reason": reason})


def unusable(record: dict[str, Any], need_score: bool) -> str | None:
    """Why a dumped line cannot count as a sample (None when it can)."""
    if not isinstance(record.get("output"), str):
        return "no 'output' (the generated text)"
    score = record.get("score")
    if need_score and (isinstance(score, bool) or not isinstance(score, int | float)):
        return "no numeric 'score' (re-score it with --rescore and --data-source)"
    return None


def _key_parts(record: dict[str, Any]) -> tuple[str, str, int]:
    """(problem, session, index) of a dumped line."""
    uid = record.get("uid")
    if isinstance(uid, str):
        parts = uid.rsplit("_", 2)
        if len(parts) == 3 and parts[2].isdigit():
            return parts[0], f"{parts[0]}_{parts[1]}", int(parts[2])
        return uid, uid, 0
    return str(record.get("input", "")), f"line{id(record)}", 0


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    return None


#: dump keys with a meaning of their own; every other number is a task field (see metrics)
KNOWN_KEYS = frozenset(
    {"score", "reward", "step", "acc", "num_turns", "recovered", "tool_calls", "tool_errors"}
    | {"tool_timeouts", "tool_format_errors"}
)


def task_fields(record: dict[str, Any]) -> dict[str, float]:
    """Numbers of a dumped line the task reward added (bools count; -1 or below = not recorded)."""
    out = {}
    for key, value in record.items():
        if key in KNOWN_KEYS or not isinstance(value, (int, float)):
            continue
        if float(value) >= 0:
            out[key] = float(value)
    return out


def to_sample(record: dict[str, Any]) -> Sample:
    """The metric view of one dumped line (agent counts -1 or absent -> unknown)."""
    calls, errors = _number(record, "tool_calls"), _number(record, "tool_errors")
    timeouts = _number(record, "tool_timeouts")
    recovered, turns = _number(record, "recovered"), _number(record, "num_turns")
    acc = record.get("acc")
    pred = record.get("pred")
    return Sample(
        score=float(record.get("score") or 0.0),
        pred=str(pred) if pred is not None else None,
        tool_calls=int(calls) if calls is not None else None,
        tool_errors=int(errors + (timeouts or 0)) if errors is not None else None,
        recovered=bool(recovered) if recovered is not None else None,
        num_turns=int(turns) if turns is not None else None,
        response_length=len(record.get("output") or ""),
        passed=bool(float(acc) >= 1.0 - 1e-9) if isinstance(acc, (int, float)) else None,
        task_fields=task_fields(record),
    )


def load_generations(
    records: list[dict[str, Any]],
    default_source: str = "unknown",
    need_score: bool = False,
    skipped: list[dict[str, str]] | None = None,
) -> list[Generation]:
    """One :class:`Generation` per final output of each session, in dump order.

    A line without ``output`` (or, with ``need_score``, without a numeric ``score``) is left out
    with a warning instead of counting as a 0-scored sample.
    """
    final: dict[str, tuple[int, int]] = {}
    for pos, record in enumerate(records):
        reason = unusable(record, need_score)
        if reason is not None:
            _skip(skipped, str(record.get(WHERE_KEY, f"record {pos}")), reason)
            continue
        _, session, index = _key_parts(record)
        if session not in final or index >= final[session][0]:
            final[session] = (index, pos)
    keep = sorted(pos for _, pos in final.values())
    out = []
    for pos in keep:
        record = records[pos]
        problem, session, _ = _key_parts(record)
        source = record.get("data_source") or default_source
        sample = to_sample(record)
        out.append(Generation(problem, session, str(source), record, sample, sample.score))
    return out


def rescore(generations: list[Generation], scorer: Callable[..., dict[str, Any]] | None = None) -> int:
    """Re-score every generation in place with ``scorer`` (default: the evaluation reward).

    The sample's score, pass flag and answer are replaced; the online score stays in
    ``online_score``. Returns how many samples changed score by more than 1e-6.
    """
    if scorer is None:
        from verl_sod.eval.reward import score_sample

        scorer = score_sample
    changed = 0
    for gen in generations:
        if gen.data_source == "unknown":
            raise ValueError("cannot re-score a sample without data_source; pass --data-source")
        extra = {"num_turns": gen.sample.num_turns} if gen.sample.num_turns is not None else {}
        result = scorer(gen.data_source, gen.record.get("output") or "", gen.record.get("gts"), extra)
        gen.rescored = dict(result)
        gen.sample.score = float(result["score"])
        acc = result.get("acc")
        gen.sample.passed = bool(float(acc) >= 1.0 - 1e-9) if acc is not None else None
        gen.sample.pred = str(result.get("pred") or "") if "pred" in result else gen.sample.pred
        changed += abs(gen.sample.score - gen.online_score) > 1e-6
    return changed


def group_problems(generations: list[Generation]) -> dict[str, list[list[Sample]]]:
    """Benchmark -> problems -> samples (problems and samples in dump order)."""
    by_problem: dict[tuple[str, str], list[Sample]] = {}
    for gen in generations:
        by_problem.setdefault((gen.data_source, gen.problem), []).append(gen.sample)
    groups: dict[str, list[list[Sample]]] = {}
    for (source, _), samples in by_problem.items():
        groups.setdefault(source, []).append(samples)
    return groups
