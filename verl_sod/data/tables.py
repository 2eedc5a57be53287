"""Reading input tables row by row and writing verl parquet in chunks.

Inputs: ``.parquet``, ``.jsonl`` (one object per line) or ``.json`` (a list of objects). Rows are
yielded as ``(index, row)``; a jsonl line that is not a JSON object is yielded as an exception
so the caller can report it like any other bad row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RowOrError = dict[str, Any] | ValueError


def count_rows(path: Path) -> int | None:
    """Number of rows when cheap to know (parquet metadata), else None."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return None


def iter_rows(path: Path, batch_size: int = 256) -> Iterator[tuple[int, RowOrError]]:
    """``(index, row)`` pairs in file order."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        index = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                yield index, _json_object(line)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json input must hold a list of objects")
        for index, row in enumerate(data):
            yield index, row if isinstance(row, dict) else ValueError("row is not a JSON object")
    else:
        raise ValueError(f"{path}: unsupported input type {suffix!r} (use .parquet, .jsonl or .json)")


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
