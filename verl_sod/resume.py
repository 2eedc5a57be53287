"""Resuming a run: keep the metrics of the steps before the checkpoint, each step once.

verl 0.9.1 resumes from ``trainer.default_local_dir/global_step_N`` (``trainer.resume_mode=auto``,
its default, takes the latest; ``resume_path`` with ``trainer.resume_from_path`` a given one). Its
``file`` logger, though, opens ``VERL_FILE_LOGGER_PATH`` with mode ``wb``: a resumed run truncates
the metrics of steps 1..N. :func:`resumed_metrics` wraps the launch: before verl starts it moves
the entries of steps <= N into ``<file>.before-resume`` (steps after N will run again), and when
verl returns it writes the file back as one entry per step (the resumed run's values win where a
step was logged twice, e.g. the validation verl runs at step N on resume). If the launcher dies
before that, the side file stays and the next resume merges it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HISTORY_SUFFIX = ".before-resume"


def resume_step(config: DictConfig, cwd: str | None = None) -> int | None:
    """The checkpoint step verl will load (the same lookup as verl's ``_load_checkpoint``), or None."""
    trainer = config.trainer
    mode = trainer.get("resume_mode", "auto")
    if mode == "resume_path":
        folder = str(trainer.get("resume_from_path") or "")
    elif mode == "auto":
        from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

        root = str(trainer.default_local_dir)
        if not os.path.isabs(root):
            root = os.path.join(cwd or os.getcwd(), root)
        folder = find_latest_ckpt_path(root) or ""
    else:
        return None
    tail = folder.rstrip("/").split("global_step_")[-1] if "global_step_" in folder else ""
    return int(tail) if tail.isdigit() else None


def read_entries(path: Path) -> list[dict[str, Any]]:
    """``{"step", "data"}`` lines of a metrics file; a truncated last line (a killed writer) is dropped."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            entries.append(entry)
    return entries


def merge_by_step(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per step, in step order; later entries' values override earlier ones."""
    merged: dict[int, dict[str, Any]] = {}
    for entry in entries:
        merged.setdefault(entry["step"], {}).update(entry.get("data") or {})
    return [{"step": step, "data": merged[step]} for step in sorted(merged)]


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e, default=float) + "\n" for e in entries))
    os.replace(tmp, path)


@contextmanager
def resumed_metrics(config: DictConfig) -> Iterator[int | None]:
    """Around a launch: keep steps <= the resume step of ``$VERL_FILE_LOGGER_PATH`` (see module doc)."""
    logged = os.environ.get("VERL_FILE_LOGGER_PATH")
    if not logged:
        yield None
        return
    path = Path(logged).expanduser().resolve()
    history = path.with_name(path.name + HISTORY_SUFFIX)
    step = resume_step(config)
    if step is None:
        history.unlink(missing_ok=True)  # a fresh run: an older run's history does not belong to it
        yield None
        return
    kept = [e for e in merge_by_step([*read_entries(history), *read_entries(path)]) if e["step"] <= step]
    _write(history, kept)
    try:
        yield step
    finally:
        _write(path, merge_by_step([*read_entries(history), *read_entries(path)]))
        history.unlink(missing_ok=True)
