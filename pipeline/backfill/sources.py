"""Where a job's rows come from: a JSONL, CSV, TSV or Parquet file, or a SELECT over
pointsman.results. Every source yields numbered rows (1-based, in source order).

JSONL lines are queries as users produce them; table rows (CSV, TSV, Parquet, SQL) are columns to
map (rows.py). CSV, TSV and Parquet are read through the embedded ClickHouse engine, which reads
them natively (convert.py), into a JSONL copy next to nothing the user owns (a temp dir).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.query_server import Reader
from pipeline.backfill.convert import convert

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "CSVWithNames",
           ".tsv": "TSVWithNames", ".parquet": "Parquet"}


@dataclass(frozen=True)
class SourceRow:
    number: int
    raw: bytes  # the line, or the row as JSON: what a dead letter keeps
    fields: dict[str, Any] | None = None  # a table row's columns; None for a JSONL line
    mapped: bool = False  # columns to map to Query fields (tables), not a query (JSONL)


class Source:
    """A source's rows; `total` counted before the first is read, for the progress bar."""

    def __init__(self, description: str, kind: str, lines: Path | None = None,
                 rows: list[dict[str, Any]] | None = None, cleanup: tempfile.TemporaryDirectory | None = None
                 ) -> None:
        self.description = description
        self.kind = kind
        self._lines = lines
        self._rows = rows
        self._cleanup = cleanup
        if rows is not None:
            self.total = len(rows)
        else:
            assert lines is not None
            with lines.open("rb") as f:
                self.total = sum(1 for _ in f)

    def rows(self) -> Iterator[SourceRow]:
        if self._rows is not None:
            for number, row in enumerate(self._rows, start=1):
                yield SourceRow(number, json.dumps(row, default=str).encode(), row, mapped=True)
            return
        assert self._lines is not None
        table = self.kind != "jsonl"
        with self._lines.open("rb") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip(b"\r\n")
                yield SourceRow(number, line, json.loads(line) if table else None, mapped=table)

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cleanup()


def format_of(path: Path, given: str | None = None) -> str:
    if given:
        return {"jsonl": "jsonl", "csv": "CSVWithNames", "tsv": "TSVWithNames",
                "parquet": "Parquet"}[given]
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path.name}: cannot tell its format from the extension; "
                         "give --format jsonl|csv|tsv|parquet") from None


def open_file(path: Path, given_format: str | None = None) -> Source:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    kind = format_of(path, given_format)
    if kind == "jsonl":
        return Source(str(path), kind, lines=path)
    scratch = tempfile.TemporaryDirectory(prefix="pointsman-backfill-")
    copy = Path(scratch.name) / "rows.jsonl"
    try:
        convert(path.resolve(), kind, copy, "JSONEachRow")
    except BaseException:
        scratch.cleanup()
        raise
    return Source(str(path), kind, lines=copy, cleanup=scratch)


def open_sql(reader: Reader, sql: str) -> Source:
    """The rows a read-only SELECT returns (e.g. last week's SLM answers from pointsman.results)."""
    columns, rows = reader.query(sql)
    return Source(f"sql: {sql}", "sql", rows=[dict(zip(columns, row, strict=True)) for row in rows])
