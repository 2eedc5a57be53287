"""Reading input tables row by row and writing verl parquet in chunks.

Inputs: ``.parquet``, ``.jsonl`` (one object per line) or ``.json`` (a list of objects). Rows are
yielded as ``(index, row)``; a jsonl line that is not UTF-8 or not a JSON object is yielded as an
exception so the caller can report it like any other bad row (with its index) and keep the others.
A problem with the whole file (missing, unreadable, a .json that is not UTF-8) raises
:class:`~verl_sod.data.base.InputError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from verl_sod.data.base import InputError

RowOrError = dict[str, Any] | ValueError


SUFFIXES = (".parquet", ".jsonl", ".json")


def check_input(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is a readable input file of a supported type."""
    if not path.exists():
        raise InputError(f"--input {path}: no such file. Pass the downloaded .parquet, .jsonl or .json file.")
    if not path.is_file():
        raise InputError(
            f"--input {path}: not a file (a directory?). Pass one .parquet, .jsonl or .json file."
        )
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(
            f"--input {path}: unsupported input type {path.suffix!r} (use .parquet, .jsonl or .json)"
        )


def count_rows(path: Path) -> int | None:
    """Number of rows when cheap to know (parquet metadata), else None."""
    if path.suffix.lower() == ".parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"--input {path}: not a readable parquet file ({exc})") from None
    return None


def columns(path: Path, wanted: Callable[[set[str]], bool]) -> set[str] | None:
    """The input's column names: the parquet schema, or the keys of the first JSON row that has
    the ``wanted`` columns (None when no row has them: the union of every row's keys is returned
    then, for the message)."""
    if path.suffix.lower() == ".parquet":
        return set(pq.read_schema(path).names)
    seen: set[str] = set()
    for _, row in iter_rows(path):
        if isinstance(row, dict):
            keys = set(row)
            if wanted(keys):
                return keys
            seen |= keys
    return seen if seen else None


def iter_rows(path: Path, batch_size: int = 256) -> Iterator[tuple[int, RowOrError]]:
    """``(index, row)`` pairs in file order; a row that cannot be decoded is yielded as a ValueError."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, batch_size)
    elif suffix == ".jsonl":
        with path.open("rb") as handle:
            for index, raw in enumerate(handle):
                yield index, _json_line(raw)
    elif suffix == ".json":
        data = _json_document(path)
        for index, row in enumerate(data):
            yield index, row if isinstance(row, dict) else ValueError("row is not a JSON object")
    else:
        raise InputError(f"--input {path}: unsupported input type {suffix!r} (use .parquet, .jsonl or .json)")


def _parquet_rows(path: Path, batch_size: int) -> Iterator[tuple[int, RowOrError]]:
    index = 0
    batches = pq.ParquetFile(path).iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"--input {path}: cannot read the rows from {index} on ({exc}); rows before {index} "
                "were fine. Re-download or re-export the file."
            ) from None
        for row in batch.to_pylist():
            yield index, row
            index += 1


def _json_document(path: Path) -> list[Any]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1]
        raise InputError(
            f"--input {path}: byte {exc.start} (line {line}) is not UTF-8 ({byte!r}); "
            "a .json file is one document, so no row can be read. Re-encode it as UTF-8, or convert it to "
            ".jsonl (one object per line) so that only the broken rows are skipped."
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(
            f"--input {path}: not valid JSON ({exc}). Fix the file or convert it to .jsonl."
        ) from None
    if not isinstance(data, list):
        raise InputError(f"--input {path}: a .json input must hold a list of objects")
    return data


def _json_line(raw: bytes) -> RowOrError:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ValueError(f"not UTF-8: byte {exc.start} of the line is {raw[exc.start : exc.start + 1]!r}")
    return _json_object(line)


def _json_object(line: str) -> RowOrError:
    try:
        row = json.loads(line)
    except ValueError as exc:
        return ValueError(f"invalid JSON line: {exc}")
    return row if isinstance(row, dict) else ValueError("line is not a JSON object")


class ParquetSink:
    """Writes rows in chunks to ``path`` via a temporary file renamed on :meth:`close`."""

    def __init__(
        self,
        path: Path,
        chunk_rows: int = 256,
        schema_for: Callable[[dict[str, Any]], pa.Schema] | None = None,
    ) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.chunk_rows = chunk_rows
        self.rows_written = 0
        self.schema_for = schema_for
        self.schema: pa.Schema | None = None
        self._pending: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None

    def check(self, row: dict[str, Any]) -> None:
        """With ``schema_for``: raise ValueError unless ``row`` round-trips through the schema that
        ``schema_for`` built from the first checked row (no key dropped, added or retyped)."""
        if self.schema_for is None:
            return
        if self.schema is None:
            self.schema = self.schema_for(row)
        try:
            back = pa.Table.from_pylist([row], schema=self.schema).to_pylist()[0]
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise ValueError(f"row does not fit the parquet schema of the first row: {exc}") from None
        if back != row:
            raise ValueError(
                "row does not fit the parquet schema of the first row (different keys, e.g. in 'tools'; "
                "one parquet column has one type)"
            )

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            table = pa.Table.from_pylist(self._pending, schema=self.schema)
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        else:
            table = pa.Table.from_pylist(self._pending, schema=self._writer.schema)
        self._writer.write_table(table)
        self.rows_written += len(self._pending)
        self._pending = []

    def close(self) -> None:
        """Finish the file; with no rows at all nothing is written."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)
