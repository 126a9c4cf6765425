"""Backfill rows as queries (pipeline/backfill/rows.py) and the job's pacing (pacing.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.backfill.pacing import PROBE_QUERIES, RateLimit, Window
from pipeline.backfill.rows import epoch_seconds, parse_line, query_bytes
from topics.errors import InvalidMessage

NOW = 1_760_000_000.0


def test_a_jsonl_query_gets_its_job_and_a_stable_default_id() -> None:
    query_id, raw = query_bytes({"text": "hello"}, job="hist", number=7, now=NOW)
    assert query_id == "hist-7"
    assert json.loads(raw) == {"text": "hello", "job": "hist", "id": "hist-7"}
    assert query_bytes({"text": "hello"}, job="hist", number=7, now=NOW + 60)[0] == "hist-7"
    kept, _ = query_bytes({"id": "q1", "text": "x"}, job="hist", number=7, now=NOW)
    assert kept == "q1"


def test_a_query_of_another_job_or_an_invalid_one_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidMessage, match="belongs to job 'other'"):
        query_bytes({"text": "x", "job": "other"}, job="hist", number=1, now=NOW)
    with pytest.raises(InvalidMessage, match="max_tokens 0 out of range"):
        query_bytes({"text": "x", "max_tokens": 0}, job="hist", number=1, now=NOW)
    with pytest.raises(InvalidMessage, match="not JSON"):
        parse_line(b"{not json")
    with pytest.raises(InvalidMessage, match="not a JSON object"):
        parse_line(b"[1, 2]")


def test_table_columns_map_to_query_fields_and_the_rest_to_metadata() -> None:
    row = {"query_id": 42, "tenant": "acme", "prompt": "old question", "max_tokens": "8",
           "temperature": "0.5", "submitted_at": "2019-03-04 05:06:07", "region": "eu",
           "empty": "", "job": ""}
    query_id, raw = query_bytes(row, job="wh", number=3, now=NOW, mapped=True)
    query = json.loads(raw)
    assert query_id == "42"
    assert query == {"id": "42", "tenant": "acme", "text": "old question", "max_tokens": 8,
                     "temperature": 0.5,
                     "submitted_at": datetime(2019, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp(),
                     "metadata": {"region": "eu"}, "job": "wh"}


def test_chat_messages_and_metadata_columns_arrive_as_json_text() -> None:
    row = {"messages": json.dumps([{"role": "user", "content": "hi"}]),
           "metadata": json.dumps({"k": "v"})}
    _, raw = query_bytes(row, job="wh", number=1, now=NOW, mapped=True)
    assert json.loads(raw)["messages"] == [{"role": "user", "content": "hi"}]
    assert json.loads(raw)["metadata"] == {"k": "v"}
    with pytest.raises(InvalidMessage, match="max_tokens 'many' is not a number"):
        query_bytes({"text": "x", "max_tokens": "many"}, job="wh", number=1, now=NOW, mapped=True)
    with pytest.raises(InvalidMessage, match=r"max_tokens 2\.5 is not a whole number"):
        query_bytes({"text": "x", "max_tokens": 2.5}, job="wh", number=1, now=NOW, mapped=True)


def test_no_cache_marks_the_query() -> None:
    _, raw = query_bytes({"text": "x"}, job="rerun", number=1, now=NOW, cache=False)
    assert json.loads(raw)["cache"] is False


def test_times_read_as_numbers_iso_or_clickhouse_text() -> None:
    expected = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for value in (expected, str(expected), "2020-01-02 03:04:05", "2020-01-02T03:04:05Z",
                  "2020-01-02 05:04:05+02:00", datetime(2020, 1, 2, 3, 4, 5)):
        assert epoch_seconds(value) == expected, value
    with pytest.raises(InvalidMessage, match="not a time"):
        epoch_seconds("last tuesday")


def test_rate_limit_allows_one_seconds_worth_then_spaces_queries() -> None:
    rate = RateLimit(10.0)
    sent = 0
    while rate.wait_s(100.0) == 0:
        rate.sent(100.0)
        sent += 1
    assert sent == 10  # a second's worth at once, never more
    assert rate.wait_s(100.0) == pytest.approx(0.1)
    assert rate.wait_s(100.1) == pytest.approx(0.0, abs=1e-9)
    # an idle hour banks no more than that second: 10 go at once again, not 36,000
    idle_sent = 0
    while rate.wait_s(3700.0) == 0:
        rate.sent(3700.0)
        idle_sent += 1
    assert idle_sent == 10
    assert RateLimit(None).wait_s(0.0) == 0


def test_window_bounds_in_flight_and_the_budget_what_it_can_still_pay() -> None:
    assert Window(100).room(in_flight=30, spent_usd=5.0, answered=10) == 70
    budget = Window(100, budget_usd=1.0)
    # nothing answered yet: a few probes only
    assert budget.room(in_flight=0, spent_usd=0.0, answered=0) == PROBE_QUERIES
    assert budget.room(in_flight=PROBE_QUERIES, spent_usd=0.0, answered=0) == 0
    # $0.10 per answer so far, $0.50 left, 2 in flight: 3 more
    assert budget.room(in_flight=2, spent_usd=0.5, answered=5) == 3
    # under budget with nothing in flight: one more may go even if the mean says no
    assert budget.room(in_flight=0, spent_usd=0.95, answered=5) == 1
    assert budget.room(in_flight=0, spent_usd=1.0, answered=10) == 0
    assert budget.exhausted(1.0) and not budget.exhausted(0.99)
    assert not Window(10).exhausted(1e9)
