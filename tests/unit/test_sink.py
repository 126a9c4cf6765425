"""The sink's pure logic: partition chunks, isolating refused rows, letter ids, safe fallback
letters; and SinkWriter's rows from real encoded messages, with a fake database that records
the inserts (the real engine is in tests/integration/test_sink_poison.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from infra.clickhouse import RowsRefused
from pipeline.sink import (
    DEAD_LETTER_COLUMNS,
    RESULT_COLUMNS,
    Origin,
    SinkWriter,
    by_partition,
    check_result,
    fallback_letter,
    insert_isolating,
    letter_id,
)
from topics.codec import encode
from topics.errors import RetryableError
from topics.names import Topics
from topics.schemas import DeadLetter, Query, Result

TOPICS = Topics("s.")


class Message:
    def __init__(self, topic: str, value: bytes, offset: int) -> None:
        self._topic, self._value, self._offset = topic, value, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


class Database:
    embedded = False  # a server's path: rows made in Python (the engine's is an integration test)

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def insert(self, table: str, rows: list[list[Any]], columns: list[str],
               settings: dict[str, Any] | None = None) -> None:
        self.rows.setdefault(table, []).extend(dict(zip(columns, r, strict=True)) for r in rows)


class RefusingInsert:
    """An insert callable that refuses any call holding a poison value, as ClickHouse does a
    block: all or nothing."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.stored: list[int] = []
        self.calls = 0

    def __call__(self, rows: list[int]) -> None:
        self.calls += 1
        bad = self.poison & set(rows)
        if bad:
            raise RowsRefused(f"refused {min(bad)}")
        self.stored.extend(rows)


def test_an_undecodable_message_on_our_topics_becomes_a_dead_letter_row() -> None:
    db = Database()
    good = Result(query_id="q1", tenant="acme", route="slm", model="m", answer="hi",
                  submitted_at=1.0, completed_at=2.0)
    SinkWriter(db, TOPICS)([  # type: ignore[arg-type]
        Message(TOPICS.results, encode(good), 5),
        Message(TOPICS.results, b"\xffnot msgpack or json", 6),
    ])
    assert [r["query_id"] for r in db.rows["pointsman.results"]] == ["q1"]
    assert set(db.rows["pointsman.results"][0]) == set(RESULT_COLUMNS)
    (letter,) = db.rows["pointsman.dead_letters"]
    assert set(letter) == set(DEAD_LETTER_COLUMNS)
    assert letter["letter_id"] == f"{TOPICS.results}:2:6" and letter["source_topic"] == TOPICS.results
    assert letter["reason"].startswith("sink: undecodable") and "not msgpack" in letter["raw"]


def test_a_row_that_cannot_be_made_is_a_dead_letter_not_a_crash() -> None:
    db = Database()
    far = Result(query_id="far", tenant="acme", route="slm", submitted_at=1e20, completed_at=1e20)
    ok = Result(query_id="ok", tenant="acme", route="slm", submitted_at=1.0, completed_at=2.0)
    SinkWriter(db, TOPICS)([Message(TOPICS.results, encode(far), 1),  # type: ignore[list-item]
                            Message(TOPICS.results, encode(ok), 2)])  # type: ignore[list-item]
    assert [r["query_id"] for r in db.rows["pointsman.results"]] == ["ok"]
    (letter,) = db.rows["pointsman.dead_letters"]
    assert letter["query_id"] == "far" and letter["tenant"] == "acme"
    assert letter["reason"].startswith("sink: cannot make a row: ") and '"far"' in letter["raw"]
    assert letter["failed_at"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)  # Kafka's time


def test_partition_chunks_span_at_most_the_limit_and_keep_every_row() -> None:
    rows = [(2016 + i // 12) * 100 + i % 12 + 1 for i in range(130)] * 3  # 130 months, 3 rows each
    chunks = by_partition(rows, lambda month: month, 50)
    assert [len(set(c)) for c in chunks] == [50, 50, 30]
    assert sorted(row for chunk in chunks for row in chunk) == sorted(rows)
    # a month's rows never straddle two inserts
    assert sum(len(set(c)) for c in chunks) == 130
    assert by_partition([], lambda month: month, 50) == []


def test_bisection_stores_every_good_row_once_and_returns_each_poison_with_its_reason() -> None:
    rows = list(range(1000))
    insert = RefusingInsert({3, 500, 501, 999})
    refused = insert_isolating(rows, insert)
    assert refused == [(3, "refused 3"), (500, "refused 500"), (501, "refused 501"),
                       (999, "refused 999")]
    assert sorted(insert.stored) == [r for r in rows if r not in insert.poison]
    assert len(insert.stored) == len(set(insert.stored))  # no good row inserted twice
    assert insert.calls < 4 * 2 * 11  # about 2 log2(n) inserts per poison row, not n


def test_bisection_lets_a_database_outage_through_to_retry_the_batch() -> None:
    def down(rows: list[int]) -> None:
        raise RetryableError("unreachable")

    with pytest.raises(RetryableError):
        insert_isolating([1, 2, 3], down)


def test_letter_ids_keep_two_tenants_and_two_texts_apart_and_a_replay_together() -> None:
    def failure(tenant: str, raw: str) -> DeadLetter:
        return DeadLetter(reason="llm failed", raw=raw, source_topic="s.route.llm",
                          query_id="q1", tenant=tenant, failed_at=1.0)

    first = letter_id(failure("acme", '{"text":"a"}'))
    assert first.startswith("s.route.llm:acme:q1:")
    assert letter_id(failure("globex", '{"text":"a"}')) != first
    assert letter_id(failure("acme", '{"text":"b"}')) != first
    assert letter_id(failure("acme", '{"text":"a"}')) == first
    positioned = DeadLetter(reason="x", raw="", source_topic="s.queries", partition=1, offset=7)
    assert letter_id(positioned) == "s.queries:1:7"


def test_a_fallback_letter_holds_only_values_that_cannot_be_refused() -> None:
    origin = Origin("s.results", 2 ** 40, 2 ** 70, b"\xff\xfe raw", None, None,
                    query_id="bad\ud800id", tenant="t" * 5000)
    row = fallback_letter(origin, "why " * 5000)
    values = dict(zip(DEAD_LETTER_COLUMNS, row.values, strict=True))
    assert values["partition"] == 2 ** 31 - 1 and values["offset"] == 2 ** 63 - 1
    for column in ("letter_id", "source_topic", "reason", "raw", "key", "query_id", "tenant"):
        values[column].encode("utf-8")  # raises on a lone surrogate
    assert values["query_id"] == "bad\\ud800id" and values["raw"] == "\\xff\\xfe raw"
    assert len(values["tenant"]) <= 1000 and len(values["reason"].encode()) <= 4000
    assert values["failed_at"].year >= 2024  # no Kafka time: now, inside every DateTime range
    assert row.month == values["failed_at"].year * 100 + values["failed_at"].month


def test_letters_of_lines_produce_could_not_send_do_not_collide() -> None:
    # produce --file keeps the line number in `offset` with no partition: two files' line 2
    # are two letters, the same line sent twice is one
    first = DeadLetter(reason="too large", raw="a" * 10, source_topic="queries", partition=-1, offset=2)
    other = DeadLetter(reason="too large", raw="b" * 10, source_topic="queries", partition=-1, offset=2)
    assert letter_id(first) != letter_id(other)
    assert letter_id(first) == letter_id(DeadLetter(**{**msgspec.structs.asdict(first)}))


def test_a_result_row_keeps_its_lane_job_and_the_question_as_asked() -> None:
    from pipeline.sink import result_row
    from topics.schemas import ChatMessage, Query

    chat = Query(messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hi")],
                 max_tokens=9, temperature=0.5, metadata={"team": "a", "n": 3}, job="h")
    row = dict(zip(RESULT_COLUMNS, result_row(Result("q", "t", "slm", query=chat, lane="backfill",
                                                     job="h")), strict=True))
    assert (row["lane"], row["job"], row["prompt"], row["max_tokens"], row["temperature"]) == (
        "backfill", "h", "", 9, 0.5)
    assert row["messages"] == '[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]'
    assert row["metadata"] == {"team": "a", "n": "3"}  # a Map of strings: other values as JSON
    text = dict(zip(RESULT_COLUMNS, result_row(Result("q", "t", "llm", query=Query(text="why"))),
                    strict=True))
    assert (text["lane"], text["job"], text["prompt"], text["messages"]) == ("live", "", "why", "")
    bare = dict(zip(RESULT_COLUMNS, result_row(Result("q", "t", "cache")), strict=True))
    assert (bare["prompt"], bare["max_tokens"], bare["metadata"]) == ("", 0, {})


@pytest.mark.parametrize(("fields", "reason"), [
    ({"submitted_at": 1e20}, "submitted_at 1e+20 is out of range (years 1 to 9999)"),
    ({"completed_at": float("nan")}, "completed_at nan is out of range (years 1 to 9999)"),
    ({"completion_tokens": 2**32}, "completion_tokens 4294967296 is out of range (0 to 4294967295)"),
    ({"query": Query(text="x", max_tokens=-1)}, "max_tokens -1 is out of range (0 to 4294967295)"),
    ({"attempts": -1}, "attempts -1 is out of range (0 or more)"),
    ({"slm_cost_usd": 1e9}, "slm_cost_usd 1000000000.0 is out of range (under a billion dollars)"),
    ({"cost_usd": float("inf")}, "cost_usd inf is out of range (under a billion dollars)"),
])
def test_a_value_the_table_cannot_hold_is_refused_by_name(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        check_result(Result("q", "t", "llm", **{"submitted_at": 1.7e9, **fields}))


def test_a_result_in_range_gives_its_partition_month() -> None:
    assert check_result(Result("q", "t", "llm", submitted_at=1_451_606_399.5)) == 201512
    assert check_result(Result("q", "t", "llm", submitted_at=1_451_606_400.0, cost_usd=-0.5,
                               prompt_tokens=2**32 - 1)) == 201601
    assert check_result(Result("q", "t", "llm", submitted_at=-1.0)) == 196912
