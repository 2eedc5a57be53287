"""What every converter shares: the bad-row and bad-input errors and the per-run options."""

from __future__ import annotations

from dataclasses import dataclass


class BadRowError(ValueError):
    """A row that cannot be converted; the message says why."""


class InputError(ValueError):
    """A problem with the whole input or output (not one row); the message names the path and the fix."""


@dataclass(frozen=True)
class Options:
    """Per-run settings the converters read."""

    split: str | None = None  # None: the dataset's default (train or test)
    data_source: str | None = None
    date_from: str | None = None
    date_to: str | None = None
