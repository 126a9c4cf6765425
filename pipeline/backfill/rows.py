"""A source row as the query it asks: columns mapped to Query fields, checked like the router
checks a message. Pure: no I/O.

A JSONL line is a query as users produce it; CSV, Parquet and SQL rows map their columns by name
(`query_id` and `prompt`, the names in pointsman.results, are accepted for `id` and `text`), and
columns that are not Query fields go into its metadata, so a warehouse export keeps its context.
A row without an id gets `<job>-<row number>`: the same row of the same source gets the same id on
every run, which is what makes a rerun collapse on it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from pipeline.validate import DEFAULT_LIMITS, Limits, validate
from topics.errors import InvalidMessage

QUERY_FIELDS = ("id", "tenant", "text", "messages", "max_tokens", "temperature", "metadata",
                "submitted_at", "deadline_s")
ALIASES = {"query_id": "id", "prompt": "text"}
_INTS = ("max_tokens",)
_FLOATS = ("temperature", "deadline_s")


def query_bytes(fields: dict[str, Any], *, job: str, number: int, now: float,
                limits: Limits = DEFAULT_LIMITS, mapped: bool = False,
                cache: bool = True) -> tuple[str, bytes]:
    """The query's id and JSON, with its job and (if it has none) its default id; InvalidMessage
    with the reason if it is not a valid query. `mapped`: the fields are table columns to map
    (CSV, Parquet, SQL), not a JSON query as produced. `cache=False`: answered afresh."""
    query = _mapped(fields) if mapped else dict(fields)
    if query.get("job") not in (None, job):
        raise InvalidMessage(f"belongs to job {str(query['job'])[:80]!r}, not {job!r}")
    query["job"] = job
    if not cache:
        query["cache"] = False
    if query.get("id") in (None, ""):
        query["id"] = f"{job}-{number}"
    raw = msgspec.json.encode(query)
    validate(raw, origin=f"{job}:{number}", timestamp=now, limits=limits, now=now)
    return str(query["id"]), raw


def parse_line(line: bytes) -> dict[str, Any]:
    """A JSONL line as a JSON object, or InvalidMessage."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        raise InvalidMessage("not JSON") from None
    if not isinstance(value, dict):
        raise InvalidMessage("not a JSON object")
    return value


def _mapped(columns: dict[str, Any]) -> dict[str, Any]:
    query: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for name, value in columns.items():
        field = ALIASES.get(name, name)
        if field in QUERY_FIELDS and field not in query:
            if not _empty(value):
                query[field] = _typed(field, value)
        elif field != "job" and not _empty(value):
            metadata[name] = value
    if metadata:
        query["metadata"] = {**metadata, **(query.get("metadata") or {})}
    return query


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _typed(field: str, value: Any) -> Any:
    """A column's value as the Query field wants it: tables carry ids as numbers, messages and
    metadata as JSON text, times as DateTime, numbers as text (CSV)."""
    if field == "id":
        return str(value)
    if field in ("messages", "metadata") and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise InvalidMessage(f"{field} is not JSON") from None
    if field == "submitted_at":
        return epoch_seconds(value)
    if field in _INTS and isinstance(value, str | float):
        return _number(field, value, int)
    if field in _FLOATS and isinstance(value, str | int):
        return _number(field, value, float)
    return value


def _number(field: str, value: str | float | int, kind: type) -> Any:
    try:
        number = float(value)
    except ValueError:
        raise InvalidMessage(f"{field} {str(value)[:40]!r} is not a number") from None
    if kind is int:
        if not math.isfinite(number) or number != int(number):
            raise InvalidMessage(f"{field} {value!r} is not a whole number")
        return int(number)
    return number


def epoch_seconds(value: Any) -> float:
    """Epoch seconds from a number, or a date-time as ClickHouse or ISO 8601 writes it (UTC unless
    it says otherwise)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidMessage(f"submitted_at {text[:40]!r} is not a time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
