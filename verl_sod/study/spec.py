"""The study spec: a typed, validated description of a multi-seed paired comparison of arms.

A spec is a YAML file (see ``docs/studies/long-horizon-sod/spec.yaml``)::

    name: smoke                       # the study's name (default output dir outputs/studies/NAME)
    task: {name: chain_calc, overrides: [], seed_overrides: [], inputs: {}}
    arms:                             # preset + (for preset sod) a registered step weighting
      - {name: grpo, preset: grpo}
      - {name: uniform, preset: sod, weighting: uniform}
      - {name: sod, preset: sod, weighting: divergence}
    seeds: [0, 1]
    train: {steps: 2, overrides: [], records_per_step: 64}
    evaluation: {problems: 32, samples: 2, metric: acc, strata: [horizon, faults]}
    primary: {where: {}}              # validation rows the primary endpoint is computed on
    contrasts: [[sod, uniform], [sod, grpo]]   # pre-declared, Holm-corrected together
    power: {effect: 0.05, power: 0.8, alpha: 0.05}

:func:`load_spec` checks every key (unknown keys, types, arm and weighting names against
:data:`verl_sod.algos.step_weightings.STEP_WEIGHTINGS`, presets, tasks, contrasts) and raises
:class:`SpecError` with the key path and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: presets whose loss carries ``sod_weighting`` (the weighting of an arm needs one of them)
WEIGHTED_PRESETS = ("sod",)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_OVERRIDE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.@/-]*=")


class SpecError(ValueError):
    """A spec that cannot be run; the message names the key and the fix."""


@dataclass(frozen=True)
class TaskSetting:
    name: str
    overrides: tuple[str, ...] = ()
    #: overrides formatted with ``{seed}`` per run (e.g. a task's own fault seed)
    seed_overrides: tuple[str, ...] = ()
    #: keyword arguments of the task's ``prepare_inputs`` (its data: e.g. horizons, fault rates)
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    name: str
    preset: str
    weighting: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Train:
    steps: int
    overrides: tuple[str, ...] = ()
    #: per-step SOD records of sod-preset arms (0: none); the event study reads them
    records_per_step: int = 64


@dataclass(frozen=True)
class Evaluation:
    problems: int
    samples: int
    #: reward-dict key of the validation dump that is the success (0/1) of a sample
    metric: str = "acc"
    #: reward-dict keys success is broken down by, when the validation rows carry them
    strata: tuple[str, ...] = ("horizon", "faults")
    #: reward-dict keys of outcomes reported per arm when present (rates or lengths)
    outcomes: tuple[str, ...] = ("recovered", "cascade_length")
    #: reward-dict key naming the fault type of a sample (recovery per fault type)
    fault_type: str = "fault_type"
    #: reward-dict key that is 1 when a sample recovered from its fault
    recovered: str = "recovered"


@dataclass(frozen=True)
class Primary:
    #: reward-dict values the primary endpoint's validation rows must have (empty: all rows)
    where: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Power:
    effect: float = 0.05
    power: float = 0.8
    alpha: float = 0.05


@dataclass(frozen=True)
class StudySpec:
    name: str
    task: TaskSetting
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    train: Train
    evaluation: Evaluation
    primary: Primary
    contrasts: tuple[tuple[str, str], ...]
    power: Power = Power()

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def runs(self) -> list[tuple[Arm, int]]:
        """Seed-major order: every arm of seed 0, then of seed 1, ... (a partial study stays paired)."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms]

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def run_id(arm: str, seed: int) -> str:
    """The directory / summary name of one run."""
    return f"{arm}-seed{seed}"


# ---------------------------------------------------------------- parsing helpers


def _mapping(
    obj: Any, where: str, allowed: set[str], required: AbstractSet[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SpecError(f"{where}: must be a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise SpecError(f"{where}: missing required key(s) {missing}")
    return obj


def _int(obj: Any, where: str, lo: int = 0) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < lo:
        raise SpecError(f"{where}: must be an integer >= {lo}, got {obj!r}")
    return obj


def _float(obj: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not lo < float(obj) < hi:
        raise SpecError(f"{where}: must be a number in ({lo}, {hi}), got {obj!r}")
    return float(obj)


def _name(obj: Any, where: str) -> str:
    if not isinstance(obj, str) or not _NAME.match(obj):
        raise SpecError(f"{where}: must be a name (letters, digits, _ . -; a letter first), got {obj!r}")
    return obj


def _strings(obj: Any, where: str) -> tuple[str, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list) or not all(isinstance(s, str) and s for s in obj):
        raise SpecError(f"{where}: must be a list of strings, got {obj!r}")
    return tuple(obj)


def _overrides(obj: Any, where: str) -> tuple[str, ...]:
    out = _strings(obj, where)
    for i, o in enumerate(out):
        if not _OVERRIDE.match(o):
            raise SpecError(f"{where}[{i}]: {o!r} is not a hydra override (key=value)")
    return out


# ---------------------------------------------------------------- sections


def _task_inputs(obj: Any, task: str) -> dict[str, Any]:
    """``task.inputs``: keyword arguments its ``prepare_inputs`` accepts (not ``data_dir``/``n_val``,
    which the study sets)."""
    import inspect

    from verl_sod.tasks import load_task

    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise SpecError(f"task.inputs: must map argument names to values, got {obj!r}")
    params = inspect.signature(load_task(task).prepare_inputs).parameters
    allowed = sorted(set(params) - {"data_dir", "n_val"})
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise SpecError(
            f"task.inputs: {unknown} not accepted by {task}'s prepare_inputs; allowed: {allowed} "
            "(the study sets n_val from evaluation.problems)"
        )
    return dict(obj)


def _task(obj: Any) -> TaskSetting:
    from verl_sod.tasks import TASKS

    m = _mapping(obj, "task", {"name", "overrides", "seed_overrides", "inputs"}, {"name"})
    if m["name"] not in TASKS:
        raise SpecError(f"task.name: unknown task {m['name']!r}; registered: {sorted(TASKS)}")
    seeded = _overrides(m.get("seed_overrides"), "task.seed_overrides")
    for i, o in enumerate(seeded):
        if "{seed}" not in o:
            raise SpecError(f"task.seed_overrides[{i}]: {o!r} has no {{seed}} placeholder")
    inputs = _task_inputs(m.get("inputs"), m["name"])
    return TaskSetting(m["name"], _overrides(m.get("overrides"), "task.overrides"), seeded, inputs)


def _arm(obj: Any, i: int) -> Arm:
    from verl_sod.algos.step_weightings import STEP_WEIGHTINGS
    from verl_sod.presets import available_presets

    where = f"arms[{i}]"
    m = _mapping(obj, where, {"name", "preset", "weighting", "overrides"}, {"name", "preset"})
    name = _name(m["name"], f"{where}.name")
    preset = m["preset"]
    if preset not in available_presets():
        raise SpecError(f"{where}.preset: unknown preset {preset!r}; choose one of {available_presets()}")
    weighting = m.get("weighting")
    if weighting is not None:
        if weighting not in STEP_WEIGHTINGS:
            raise SpecError(
                f"{where}.weighting: unknown step weighting {weighting!r}; "
                f"registered: {sorted(STEP_WEIGHTINGS)}"
            )
        if preset not in WEIGHTED_PRESETS:
            raise SpecError(
                f"{where}.weighting: {weighting!r} needs preset {' or '.join(WEIGHTED_PRESETS)} (its loss "
                f"carries the weighting), got preset {preset!r}; drop the weighting or use preset sod"
            )
    elif preset in WEIGHTED_PRESETS:
        weighting = "divergence"
    return Arm(name, preset, weighting, _overrides(m.get("overrides"), f"{where}.overrides"))


def _evaluation(obj: Any) -> Evaluation:
    keys = {"problems", "samples", "metric", "strata", "outcomes", "fault_type", "recovered"}
    m = _mapping(obj, "evaluation", keys, {"problems", "samples"})
    d = Evaluation(0, 0)
    return Evaluation(
        problems=_int(m["problems"], "evaluation.problems", 2),
        samples=_int(m["samples"], "evaluation.samples", 1),
        metric=str(m.get("metric", d.metric)),
        strata=_strings(m["strata"], "evaluation.strata") if "strata" in m else d.strata,
        outcomes=_strings(m["outcomes"], "evaluation.outcomes") if "outcomes" in m else d.outcomes,
        fault_type=str(m.get("fault_type", d.fault_type)),
        recovered=str(m.get("recovered", d.recovered)),
    )


def _contrasts(obj: Any, arms: tuple[Arm, ...]) -> tuple[tuple[str, str], ...]:
    names = {a.name for a in arms}
    if not isinstance(obj, list) or not obj:
        raise SpecError("contrasts: must be a non-empty list of [arm, arm] pairs (pre-declared)")
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(obj):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise SpecError(f"contrasts[{i}]: must be [arm, arm], got {pair!r}")
        for p in pair:
            if p not in names:
                raise SpecError(f"contrasts[{i}]: unknown arm {p!r}; arms: {sorted(names)}")
        if pair[0] == pair[1] or tuple(pair) in out or tuple(pair[::-1]) in out:
            raise SpecError(f"contrasts[{i}]: {pair!r} compares an arm with itself or repeats a contrast")
        out.append((pair[0], pair[1]))
    return tuple(out)


def parse_spec(obj: Any) -> StudySpec:
    """A :class:`StudySpec` from decoded YAML; raises :class:`SpecError`."""
    top = {"name", "task", "arms", "seeds", "train", "evaluation", "primary", "contrasts", "power"}
    m = _mapping(obj, "spec", top, top - {"primary", "power"})
    if not isinstance(m["arms"], list) or len(m["arms"]) < 2:
        raise SpecError("arms: must list at least 2 arms (a study compares arms)")
    arms = tuple(_arm(a, i) for i, a in enumerate(m["arms"]))
    dupes = sorted({a.name for a in arms if sum(b.name == a.name for b in arms) > 1})
    if dupes:
        raise SpecError(f"arms: duplicate arm name(s) {dupes}")
    seeds = m["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"seeds: must be a non-empty list of integers, got {seeds!r}")
    seeds = tuple(_int(s, f"seeds[{i}]") for i, s in enumerate(seeds))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds: repeated seed in {list(seeds)}")
    t = _mapping(m["train"], "train", {"steps", "overrides", "records_per_step"}, {"steps"})
    train = Train(
        _int(t["steps"], "train.steps", 1),
        _overrides(t.get("overrides"), "train.overrides"),
        _int(t.get("records_per_step", 64), "train.records_per_step"),
    )
    p = _mapping(m.get("primary", {}), "primary", {"where", "description"})
    where = p.get("where", {}) or {}
    if not isinstance(where, dict) or not all(isinstance(k, str) for k in where):
        raise SpecError(f"primary.where: must map reward-dict keys to values, got {where!r}")
    pw = _mapping(m.get("power", {}), "power", {"effect", "power", "alpha"})
    return StudySpec(
        name=_name(m["name"], "name"),
        task=_task(m["task"]),
        arms=arms,
        seeds=seeds,
        train=train,
        evaluation=_evaluation(m["evaluation"]),
        primary=Primary(dict(where), str(p.get("description", ""))),
        contrasts=_contrasts(m["contrasts"], arms),
        power=Power(
            _float(pw.get("effect", 0.05), "power.effect", 0.0, 1.0),
            _float(pw.get("power", 0.8), "power.power", 0.0, 1.0),
            _float(pw.get("alpha", 0.05), "power.alpha", 0.0, 1.0),
        ),
    )


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a spec file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: spec file does not exist")
    try:
        obj = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({exc})") from None
    try:
        return parse_spec(obj)
    except SpecError as exc:
        raise SpecError(f"{p}: {exc}") from None
