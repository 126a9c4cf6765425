"""Rows as columns for clickhouse-connect's column-oriented insert, generic over the columns.

Measured by `pointsman bench sink` (BENCHMARKS.md): against `client.insert(rows)`, handing the
client columns skips its own row-to-column pivot; giving it the column types it would otherwise
ask the engine for (a DESCRIBE before every insert) saves a query per insert; and a
DateTime64 column of aware datetimes, turned into integer ticks here by exact integer
arithmetic, skips the client's float-based conversion of each value (the costliest Python step
of its serialiser). Any column this cannot convert is passed as it is, so the client converts
(or refuses) it exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.temporal import DateTime64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _tick(ch_type: ClickHouseType) -> timedelta | None:
    """One tick of a DateTime64 column of precision <= 6 (whole microseconds); else None."""
    if not isinstance(ch_type, DateTime64) or ch_type.nullable or ch_type.prec > 1_000_000:
        return None
    return timedelta(microseconds=1_000_000 // ch_type.prec)


def _ticks(values: Sequence[Any], tick: timedelta) -> Sequence[Any]:
    """Aware datetimes as ticks since the epoch, floored as the client does; a column holding
    anything else (a naive datetime, which the client reads as local time; a None; an int
    already) is returned unchanged for the client to handle."""
    try:
        return [(value - _EPOCH) // tick for value in values]
    except TypeError:
        return values


def to_columns(rows: Sequence[Sequence[Any]], types: Sequence[ClickHouseType]) -> list[Sequence[Any]]:
    """`rows` (each holding one value per type) as one sequence per column."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    if rows and len(columns) != len(types):
        raise ValueError(f"a row has {len(columns)} values for {len(types)} columns")
    for i, ch_type in enumerate(types):
        tick = _tick(ch_type)
        if tick is not None:
            columns[i] = _ticks(columns[i], tick)
    return columns
