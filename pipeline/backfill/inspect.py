"""What a job did, from ClickHouse: its state (the jobs table) and its answers (results FINAL,
one row per query), and its results written out in a format through the engine."""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from clickhouse_connect.driver.binding import format_str

from infra.query_server import Reader
from pipeline.backfill.convert import convert

EXPORT_FORMATS = {"parquet": "Parquet", "csv": "CSVWithNames", "jsonl": "JSONEachRow"}
_STATE = ("status", "source", "total", "next_row", "sent", "skipped", "invalid", "budget_usd",
          "rate", "started_at", "updated_at")



def job_status(reader: Reader, name: str) -> dict[str, Any] | None:
    """total, answered, errors, cost_usd and routes of one job; None if there is no such job."""
    _, states = reader.query(f"SELECT {', '.join(_STATE)} FROM pointsman.jobs FINAL "
                             f"WHERE name = {format_str(name)}")
    _, answers = reader.query(
        "SELECT route, count(), countIf(error != ''), sum(cost_usd), sum(all_llm_cost_usd) "
        f"FROM pointsman.results FINAL WHERE job = {format_str(name)} GROUP BY route ORDER BY route")
    if not states and not answers:
        return None
    state = dict(zip(_STATE, states[0], strict=True)) if states else {"status": "unknown"}
    routes = {str(route): int(n) for route, n, *_ in answers}
    return {
        "job": name, **state,
        "answered": sum(routes.values()),
        "errors": sum(int(row[2]) for row in answers),
        "cost_usd": round(sum(float(row[3]) for row in answers), 10),
        "all_llm_cost_usd": round(sum(float(row[4]) for row in answers), 10),
        "routes": routes,
    }


def job_list(reader: Reader) -> list[dict[str, Any]]:
    """Every job: the ones with a state, and any whose results name a job that has none (its
    state columns then read as empty and zero)."""
    columns, rows = reader.query(
        "SELECT name, status, total, sent, invalid, answered, errors, cost_usd, started_at, "
        "updated_at FROM (SELECT name, status, total, sent, invalid, started_at, updated_at "
        "FROM pointsman.jobs FINAL) AS j FULL OUTER JOIN (SELECT job AS name, count() AS answered, "
        "countIf(error != '') AS errors, sum(cost_usd) AS cost_usd FROM pointsman.results FINAL "
        "WHERE job != '' GROUP BY job) AS r USING name ORDER BY name")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def export_job(reader: Reader, name: str, fmt: str, out: Path) -> int:
    """Write the job's results (one row per query) to `out`; returns the row count."""
    columns, types = _result_columns(reader)
    _, rows = reader.query(f"SELECT {', '.join(columns)} FROM pointsman.results FINAL "
                           f"WHERE job = {format_str(name)} ORDER BY submitted_at, query_id")
    encoder = msgspec.json.Encoder(enc_hook=str)
    with tempfile.TemporaryDirectory(prefix="pointsman-export-") as scratch:
        staged = Path(scratch) / "rows.jsonl"
        with staged.open("wb") as f:
            for row in rows:
                f.write(encoder.encode(dict(zip(columns, row, strict=True))) + b"\n")
        structure = ", ".join(f"{c} {t}" for c, t in zip(columns, types, strict=True))
        convert(staged, "JSONEachRow", out.resolve(), EXPORT_FORMATS[fmt], structure)
    return len(rows)


def _result_columns(reader: Reader) -> tuple[list[str], list[str]]:
    _, rows = reader.query("SELECT name, type FROM system.columns WHERE database = 'pointsman' "
                           "AND table = 'results' ORDER BY position")
    return [str(r[0]) for r in rows], [str(r[1]) for r in rows]


def print_json(data: Any) -> str:
    return json.dumps(data, default=_json_value, indent=2)


def _json_value(value: Any) -> Any:
    # costs are Decimal(18, 9): a number in JSON, not a string
    return float(value) if isinstance(value, Decimal) else str(value)
