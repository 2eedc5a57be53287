"""The preparation driver: read, convert, report bad rows, write ``DIR/NAME.parquet``.

Every row that cannot be converted is reported on stderr with its index and reason; with
``on_bad_row="skip"`` it is left out and counted, with ``"fail"`` the run stops there, writes no
output and returns a non-zero status. A problem with the whole input or output (a missing file, an
output path that is a file, a file of another dataset's columns, an unreadable file) is one
``error:`` line on stderr and status 2, found before anything is created where it can be; no
``NAME.parquet.tmp`` is left behind on any failure. Progress goes to stdout every
``progress_every`` rows, and a summary with the counts (read, written, bad by reason, filtered) at the end.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from verl_sod.data.base import InputError
from verl_sod.data.sources import COLUMNS, CONVERTERS, SCHEMAS, Converter, Options
from verl_sod.data.tables import ParquetSink, RowOrError, check_input, columns, count_rows, iter_rows


@dataclass
class Report:
    """Counts of one run."""

    read: int = 0
    written: int = 0
    filtered: int = 0
    bad: Counter = field(default_factory=Counter)
    output: Path | None = None

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())


def _reason_key(reason: str) -> str:
    return reason.split(":")[0][:80]


def prepare(
    name: str,
    input_path: Path,
    output_dir: Path,
    *,
    on_bad_row: str = "skip",
    options: Options | None = None,
    progress_every: int = 1000,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> tuple[int, Report]:
    """Convert ``input_path`` with the ``name`` converter; returns (exit status, report)."""
    out, err = out or sys.stdout, err or sys.stderr
    if name not in CONVERTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(CONVERTERS)}")
    if on_bad_row not in ("skip", "fail"):
        raise ValueError(f"on_bad_row must be 'skip' or 'fail', got {on_bad_row!r}")
    convert, default_split = CONVERTERS[name]
    opts = options or Options()
    opts = replace(opts, split=opts.split or default_split)
    tag = f"[prepare {name}]"
    try:
        total = _check_paths(name, input_path, output_dir)
    except InputError as exc:
        print(f"{tag} error: {exc}", file=err)
        return 2, Report()
    output_dir.mkdir(parents=True, exist_ok=True)
    sink = ParquetSink(output_dir / f"{name}.parquet", schema_for=SCHEMAS.get(name))
    report = Report()
    print(f"{tag} reading {input_path} ({total if total is not None else '?'} rows)", file=out)
    try:
        for index, raw in iter_rows(input_path):
            report.read += 1
            reason = _convert_into(sink, report, convert, index, raw, opts)
            if reason is not None:
                print(f"{tag} bad row {index}: {reason}", file=err)
                if on_bad_row == "fail":
                    sink.abort()
                    print(f"{tag} stopped at row {index} (--on-bad-row fail); nothing written", file=out)
                    return 1, report
            if progress_every > 0 and report.read % progress_every == 0:
                _progress(tag, report, total, out)
        sink.close()
    except InputError as exc:
        sink.abort()
        print(f"{tag} error: {exc}; nothing written", file=err)
        return 2, report
    except BaseException:
        sink.abort()  # no NAME.parquet.tmp left behind, whatever stopped the run
        raise
    report.output = sink.path if report.written else None
    _summary(tag, report, out)
    return (0 if report.written else 1), report


def _check_paths(name: str, input_path: Path, output_dir: Path) -> int | None:
    """Everything that would stop the whole run, before anything is created; returns the row count."""
    check_input(input_path)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output {output_dir}: exists and is not a directory. Pass a directory.")
    target = output_dir / f"{name}.parquet"
    if target.is_dir():
        raise InputError(
            f"--output {output_dir}: {target} is a directory. Remove it or pick another --output."
        )
    total = count_rows(input_path)
    _check_columns(name, input_path)
    return total


def _check_columns(name: str, input_path: Path) -> None:
    alternatives = COLUMNS.get(name, ())
    if not alternatives:
        return

    def fits(keys: set[str]) -> bool:
        return any(set(alt) <= keys for alt in alternatives)

    found = columns(input_path, fits)
    if found is not None and fits(found):
        return
    need = " or ".join("(" + ", ".join(alt) + ")" for alt in alternatives)
    missing = sorted(set(alternatives[0]) - (found or set()))
    raise InputError(
        f"--input {input_path}: no row has the columns {name} needs: {need}; missing {missing}, found "
        f"{sorted(found or [])[:12]}. Is this the {name} file? See docs/rewards-and-data.md for the formats."
    )


def _progress(tag: str, report: Report, total: int | None, out: TextIO) -> None:
    of = f"/{total}" if total is not None else ""
    print(
        f"{tag} {report.read}{of} rows read, {report.written} written, {report.n_bad} bad, "
        f"{report.filtered} filtered",
        file=out,
    )


def _convert_into(
    sink: ParquetSink, report: Report, convert: Converter, index: int, raw: RowOrError, opts: Options
) -> str | None:
    """Convert one row into ``sink``; returns the reason when the row is bad."""
    try:
        if isinstance(raw, Exception):
            raise raw
        row = convert(index, raw, opts)
        if row is not None:
            sink.check(row)
    except (ValueError, KeyError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        report.bad[_reason_key(reason)] += 1
        return reason
    if row is None:
        report.filtered += 1
    else:
        sink.add(row)
        report.written += 1
    return None


def _summary(tag: str, report: Report, out: TextIO) -> None:
    print(
        f"{tag} done: {report.read} read, {report.written} written, {report.n_bad} bad "
        f"(skipped), {report.filtered} filtered",
        file=out,
    )
    for reason, count in report.bad.most_common():
        print(f"{tag}   bad: {count} x {reason}", file=out)
    if report.output is not None:
        print(f"{tag} wrote {report.output}", file=out)
    else:
        print(f"{tag} no rows to write; no file written", file=out)
