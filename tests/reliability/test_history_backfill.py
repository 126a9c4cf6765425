"""Ten years of monthly history through the backfill lane, then live canaries (issue 9's judged
run): every historic query is one row with its answer and its true submission time (the answer's
retention counts from the insert, and the sink splits inserts spanning 120 partitions), and the
canaries sent after the backfill are answered too."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness import Pipeline
from tests.integration.test_pipeline import send
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant

pytestmark = pytest.mark.integration

MONTHS = 120


def month_start(i: int) -> float:
    """The first of each month from January 2015, as epoch seconds."""
    return datetime(2015 + i // 12, i % 12 + 1, 1, 12, tzinfo=UTC).timestamp()


def test_ten_years_of_history_keep_their_answers_and_dates(pipeline: Pipeline, broker: str,
                                                          tmp_path: Path) -> None:
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "always-slm"
    pipeline.start("sink", "router", "slm")
    pipeline.reader()  # the sink holds the database: the CLI reads through its endpoint
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps({
        "id": f"hist-{i}", "tenant": "acme", "text": f"historic question number {i}",
        "max_tokens": 4, "submitted_at": month_start(i)}) + "\n" for i in range(MONTHS)))
    sent = pipeline.cli("backfill", str(history), "--no-wait")  # the canaries go while it runs
    assert sent.returncode == 0, sent.stderr
    canaries = [json.dumps({"id": f"canary-{i}", "text": f"live canary {i}", "max_tokens": 4}).encode()
                for i in range(10)]
    send(pipeline, broker, canaries)
    canaries_sent = time.time()

    canary_sql = "SELECT count() FROM pointsman.results FINAL WHERE query_id LIKE 'canary-%'"
    assert pipeline.wait_until(canary_sql, 10, timeout=120) == 10
    rows_sql = "SELECT count() FROM pointsman.results FINAL"
    assert pipeline.wait_until(rows_sql, MONTHS + 10, timeout=180) == MONTHS + 10
    reader = pipeline.reader()
    stored = reader.query(
        "SELECT query_id, toUnixTimestamp(submitted_at), answer != '', _partition_id "
        "FROM pointsman.results FINAL WHERE query_id LIKE 'hist-%'")[1]
    assert len(stored) == MONTHS
    for query_id, submitted, has_answer, _ in stored:
        assert submitted == int(month_start(int(query_id.split("-")[1]))), query_id
        assert has_answer, f"{query_id} lost its answer on insert"
    assert len({row[3] for row in stored}) == MONTHS  # one monthly partition each
    assert pipeline.count("SELECT count() FROM pointsman.dead_letters FINAL") == 0
    latest = pipeline.count("SELECT toUnixTimestamp(max(completed_at)) FROM pointsman.results FINAL "
                            "WHERE query_id LIKE 'canary-%'")
    record = outcome(pipeline, "backfill of 120 months of history, then live canaries",
                     MONTHS + len(canaries), {r[0] for r in stored} | {f"canary-{i}" for i in range(10)},
                     0)
    record["canaries_answered_within_s"] = round(latest - canaries_sent, 1)
    assert_invariant(record)
