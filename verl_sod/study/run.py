"""``python -m verl_sod.study run SPEC.yaml``: every (arm, seed) run of a study, one at a time, resumable.

Layout of a study directory ``DIR`` (default ``outputs/studies/<name>``, out of git)::

    DIR/spec.yaml                    the spec the study runs (written once; a different spec is refused)
    DIR/runs/ARM-seedS/              one run's raw outputs (verl log, metrics.jsonl, val/, sod_steps/)
    DIR/summaries/ARM-seedS.json     its small summary (verl_sod/study/summary.py), written LAST and
                                     atomically: it is the run's completion mark

A run whose summary exists is never redone; a run directory without a summary is a run that was
interrupted, and is cleared and redone. Runs go seed-major (all arms of one seed, then the next
seed), so a study stopped early still has complete pairs. Each run is launched through
:func:`verl_sod.runner.run_cpu_training`, the launcher of ``make demo`` and the e2e tests.

Seeding (verl 0.9.1 keys, all set to the run's seed so that the arms of one seed are paired):
``data.seed`` (the train dataloader's shuffle; verl leaves it unset, i.e. a fresh order each run),
``actor_rollout_ref.actor.data_loader_seed`` (mini-batch order), ``actor_rollout_ref.rollout.seed``
(the ``hf`` rollout server's ``torch.manual_seed``: the sampling stream), and for sod-preset arms
``distillation.distillation_loss.sod_random_seed``; a task's own seeds via ``task.seed_overrides``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from verl_sod.report.records import ReportError
from verl_sod.runner import RunResult, run_cpu_training
from verl_sod.study.spec import WEIGHTED_PRESETS, Arm, SpecError, StudySpec, parse_spec, run_id
from verl_sod.study.summary import build_summary

SEED_KEYS = ("data.seed", "actor_rollout_ref.actor.data_loader_seed", "actor_rollout_ref.rollout.seed")
SOD_SEED_KEY = "distillation.distillation_loss.sod_random_seed"
LOSS = "distillation.distillation_loss"

#: (preset, run_dir, steps, n_val, extra overrides, task, task inputs) -> RunResult; tests inject a fake
Launcher = Callable[[str, Path, int, int, list[str], str, dict[str, Any]], RunResult]


def default_launcher(
    preset: str, run_dir: Path, steps: int, n_val: int, extra: list[str], task: str, inputs: dict[str, Any]
) -> RunResult:
    return run_cpu_training(
        preset,
        run_dir,
        steps=steps,
        validate=True,
        extra=extra,
        echo=False,
        n_val=n_val,
        task=task,
        task_inputs=inputs,
    )


def run_overrides(spec: StudySpec, arm: Arm, seed: int, run_dir: Path) -> list[str]:
    """Every override of one run, in order (a later one wins in hydra)."""
    out = [*spec.task.overrides, *(o.format(seed=seed) for o in spec.task.seed_overrides)]
    out += [f"{key}={seed}" for key in SEED_KEYS]
    out += [
        "trainer.val_before_train=false",  # every arm starts from the same checkpoint
        f"trainer.test_freq={spec.train.steps}",
        f"actor_rollout_ref.rollout.val_kwargs.n={spec.evaluation.samples}",
        f"trainer.validation_data_dir={run_dir / 'val'}",
        f"trainer.experiment_name={arm.name}",
    ]
    if arm.preset in WEIGHTED_PRESETS:
        out += [
            f"{SOD_SEED_KEY}={seed}",
            f"{LOSS}.sod_weighting={arm.weighting}",
            f"{LOSS}.sod_records_per_step={spec.train.records_per_step}",
        ]
    return [*out, *spec.train.overrides, *arm.overrides]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def claim_dir(spec: StudySpec, out: Path) -> None:
    """Write ``out/spec.yaml``, or check that the one there is the same study."""
    path = out / "spec.yaml"
    mine = spec.to_dict()
    if path.is_file():
        try:
            theirs = parse_spec(yaml.safe_load(path.read_text(encoding="utf-8"))).to_dict()
        except (SpecError, yaml.YAMLError) as exc:
            raise SpecError(
                f"{path}: unreadable study spec ({exc}); remove it or choose another --out"
            ) from None
        if theirs != mine:
            changed = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise SpecError(
                f"{path}: {out} holds a different study (differs in {changed}); resume it with the same "
                "spec or choose another --out"
            )
        return
    _atomic_write(path, yaml.safe_dump(mine, sort_keys=False))


def done_summaries(out: Path) -> dict[str, dict[str, Any]]:
    """``{run id: summary}`` of the finished runs of a study directory."""
    found = {}
    for p in sorted((out / "summaries").glob("*.json")):
        try:
            found[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue  # not ours (the summary is written atomically); the run is redone
    return found


def _fmt_min(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _final(summary: dict[str, Any], key: str) -> float | None:
    rows = summary["validation"]
    vals = [float(r[key]) for r in rows if key in r]
    return sum(vals) / len(vals) if vals else None


def run_one(spec: StudySpec, arm: Arm, seed: int, out: Path, launch: Launcher) -> dict[str, Any]:
    """Clear any half-finished run directory, run, summarise; raises RuntimeError on failure."""
    rid = run_id(arm.name, seed)
    run_dir = (out / "runs" / rid).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    extra = run_overrides(spec, arm, seed, run_dir)
    result = launch(
        arm.preset,
        run_dir,
        spec.train.steps,
        spec.evaluation.problems,
        extra,
        spec.task.name,
        spec.task.inputs,
    )
    if result.returncode != 0:
        raise RuntimeError(f"run {rid} failed (exit {result.returncode}); log: {result.log_path}")
    identity = {
        "run": rid,
        "arm": arm.name,
        "seed": seed,
        "preset": arm.preset,
        "weighting": arm.weighting,
        "task": spec.task.name,
        "task_inputs": spec.task.inputs,
        "steps": spec.train.steps,
        "overrides": extra,
        "seconds": round(result.seconds, 1),
    }
    try:
        summary = build_summary(run_dir, identity)
    except ReportError as exc:
        raise RuntimeError(f"run {rid} finished but left no usable outputs: {exc}") from None
    _atomic_write(out / "summaries" / f"{rid}.json", json.dumps(summary, indent=1) + "\n")
    return summary


def plan(spec: StudySpec, out: Path) -> list[str]:
    """One line per run: its id, whether it is done, and the overrides it gets (``--dry-run``)."""
    done = done_summaries(out)
    lines = []
    for arm, seed in spec.runs():
        rid = run_id(arm.name, seed)
        extra = run_overrides(spec, arm, seed, (out / "runs" / rid).resolve())
        state = "done" if rid in done else "to run"
        lines.append(f"{rid} [{state}]: preset={arm.preset} task={spec.task.name} " + " ".join(extra))
    return lines


def say_flush(line: str) -> None:
    print(line, flush=True)


def run_study(
    spec: StudySpec, out: str | Path, launch: Launcher | None = None, say: Callable[[str], None] = say_flush
) -> dict[str, dict[str, Any]]:
    """Run every missing run of ``spec`` into ``out`` (``launch``: default :func:`default_launcher`);
    returns all summaries (old and new)."""
    launch = launch or default_launcher
    out = Path(out)
    claim_dir(spec, out)
    done = done_summaries(out)
    runs = spec.runs()
    todo = [(a, s) for a, s in runs if run_id(a.name, s) not in done]
    say(
        f"[study] {spec.name}: {len(runs)} runs ({len(spec.arms)} arms x {len(spec.seeds)} seeds), "
        f"{len(runs) - len(todo)} already done, {len(todo)} to run; dir {out}"
    )
    t0 = time.time()
    for i, (arm, seed) in enumerate(todo, start=1):
        rid = run_id(arm.name, seed)
        say(f"[study] run {i}/{len(todo)} {rid} ({arm.preset}{'/' + arm.weighting if arm.weighting else ''})")
        summary = run_one(spec, arm, seed, out, launch)
        done[rid] = summary
        durations = [float(v.get("seconds", 0.0)) for v in done.values()]
        eta = (sum(durations) / len(durations)) * (len(todo) - i)
        metric = _final(summary, spec.evaluation.metric)
        shown = (
            f"held-out {spec.evaluation.metric} {metric:.3f}" if metric is not None else "no held-out metric"
        )
        say(
            f"[study] run {i}/{len(todo)} {rid} done in {_fmt_min(summary['seconds'])}: {shown}; "
            f"elapsed {_fmt_min(time.time() - t0)}, ETA {_fmt_min(eta)} for {len(todo) - i} more"
        )
    say(f"[study] all {len(runs)} runs done; report: python -m verl_sod.study report {out}")
    return done
