"""Reliability runs record what happened to every query; with POINTSMAN_RELIABILITY_REPORT=path
the figures are written there as JSON at the end (RELIABILITY.md is made from them)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Pipeline

RECORDS: list[dict[str, object]] = []


@pytest.fixture(scope="session", autouse=True)
def _write_report() -> Iterator[None]:
    yield
    target = os.environ.get("POINTSMAN_RELIABILITY_REPORT")
    if target and RECORDS:
        Path(target).write_text(json.dumps(RECORDS, indent=2))


def _ms(value: object) -> float:
    return round(float(value or 0), 1)  # type: ignore[arg-type]


def outcome(pipeline: Pipeline, fault: str, sent: int, valid: set[str], malformed: int) -> dict:
    """The invariant's numbers: every valid id exactly one row, every malformed one letter."""
    reader = pipeline.reader()
    # a row is one (tenant, id, content): two tenants, or two texts, under one id are two rows
    rows = reader.query("SELECT query_id, count() FROM pointsman.results "
                        "GROUP BY tenant, query_id, fingerprint")[1]
    final_ids = {r[0] for r in reader.query("SELECT query_id FROM pointsman.results FINAL")[1]}
    letters, failures = reader.query(
        "SELECT countIf(query_id = ''), countIf(query_id != '') FROM pointsman.dead_letters FINAL")[1][0]
    unkept = int(reader.query(
        "SELECT count() FROM pointsman.results FINAL WHERE error != '' AND query_id NOT IN "
        "(SELECT query_id FROM pointsman.dead_letters FINAL)")[1][0][0])
    duplicated = int(reader.query(
        "SELECT count() - uniqExact(tenant, query_id, fingerprint) FROM pointsman.results FINAL"
    )[1][0][0])
    errors = int(reader.query(
        "SELECT countIf(error != '') FROM pointsman.results FINAL")[1][0][0])
    ok = reader.query(
        "SELECT quantile(0.5)(total_ms), quantile(0.99)(total_ms), quantile(0.5)(inference_ms), "
        "quantile(0.99)(inference_ms) FROM pointsman.results FINAL "
        "WHERE error = '' AND route IN ('llm', 'escalated')")[1][0]
    record = {
        "fault": fault, "sent": sent, "valid": len(valid), "answered": len(final_ids & valid),
        "answered_ok": len(final_ids & valid) - errors, "errors": errors,
        "dead_lettered": int(letters), "failure_letters": int(failures),
        "errors_without_dead_letter": unkept, "malformed": malformed,
        "lost": len(valid - final_ids), "unexpected": len(final_ids - valid),
        "duplicate_inserts": sum(n - 1 for _, n in rows), "duplicated_rows_after_dedup": duplicated,
        "llm_ok_total_p50_ms": _ms(ok[0]), "llm_ok_total_p99_ms": _ms(ok[1]),
        "llm_ok_call_p50_ms": _ms(ok[2]), "llm_ok_call_p99_ms": _ms(ok[3]),
    }
    RECORDS.append(record)
    return record
