"""The embedded sink's engine-side mapping (pipeline/sink_json.py) against the Python one
(result_row, a ClickHouse server's path), on the real embedded engine: the same results must
store identical rows, and a value only the engine sees is refused, never wrapped."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from infra.clickhouse import Database, RowsRefused
from pipeline.bench_sink import result_messages
from pipeline.sink import (
    INSERT_SETTINGS,
    RESULT_COLUMNS,
    RESULTS_TABLE,
    SinkWriter,
    insert_result_messages,
    result_row,
)
from tests.integration.test_sink_poison import TOPICS, db, messages, opened  # noqa: F401
from topics.codec import encode
from topics.errors import RetryableError
from topics.schemas import ChatMessage, Query, Result, Step, Timings

pytestmark = pytest.mark.integration

PYTHON_TABLE = "python_path.results"
ROWS = "SELECT * EXCEPT inserted_at FROM {table} ORDER BY query_id"


def edge_cases() -> list[Result]:
    """Every field at its default, at a tie, empty, null or unusual."""
    t = 1_700_000_000.0
    return [
        Result("e-bare", "acme", "cache"),  # no question, every default
        Result("e-text", "acme", "llm", query=Query(text="why?"), submitted_at=t + 0.0005,
               completed_at=t + 0.0015),  # half-millisecond ties
        Result("e-chat", "acme", "slm", query=Query(messages=[
            ChatMessage("system", 'be "brief"\n'), ChatMessage("user", "héllo ☃ \\ 日本")],
            max_tokens=17, temperature=0.7), submitted_at=t, completed_at=t + 1),
        Result("e-empty-chat", "acme", "slm", query=Query(text="x", messages=[]), submitted_at=t),
        Result("e-meta", "globex", "llm", query=Query(text="m", metadata={
            "s": "web", "i": 3, "f": 1e-05, "b": True, "n": None, "o": {"k": [1, 2.5]},
            "u": "ünï \"q\""}), submitted_at=t),
        Result("e-costs", "acme", "escalated", cost_usd=8.775e-7, all_llm_cost_usd=0.1 + 0.2,
               slm_cost_usd=0.000299999999999, prompt_tokens=2**32 - 1, completion_tokens=0,
               submitted_at=t),
        Result("e-neg-cost", "acme", "llm", cost_usd=-8.765e-7, submitted_at=t),
        Result("e-decision", "acme", "escalated", confidence=0.1, similarity=0.93, policy="learned",
               score=0.123456789012, threshold=0.5, upstream="primary", attempts=70_000,
               error="upstream 'x' said \"no\"\n", lane="backfill", job="hist-2016",
               trail=(Step("slm", "smollm2", "", "low confidence 0.10 < 0.50"),
                      Step("llm", "gpt", "primary", "answered")),
               timings=Timings(queued_ms=1.25, routed_ms=0.1, wait_ms=3.0, inference_ms=999.999,
                               total_ms=1004.349), submitted_at=1_451_606_400.123),
    ]


def rows(database: Database, table: str) -> list[tuple[Any, ...]]:
    return database.query(ROWS.format(table=table))[1]


def test_the_engine_stores_exactly_the_rows_result_row_makes(db: Database) -> None:  # noqa: F811
    results = result_messages(3000, seed=7) + edge_cases()
    writer = SinkWriter(db, TOPICS)
    assert writer.engine_parses
    writer(messages(results))
    assert writer.dead_lettered == 0
    db.command("CREATE DATABASE python_path")
    db.command(f"CREATE TABLE {PYTHON_TABLE} AS {RESULTS_TABLE}")
    db.insert(PYTHON_TABLE, [result_row(r) for r in results], RESULT_COLUMNS, INSERT_SETTINGS)
    engine, python = rows(db, RESULTS_TABLE), rows(db, PYTHON_TABLE)
    assert len(engine) == len(results)
    assert engine == python
    chat = db.query("SELECT messages, max_tokens, metadata FROM pointsman.results "
                    "WHERE query_id IN ('e-chat', 'e-bare', 'e-meta') ORDER BY query_id")[1]
    assert chat[0] == ("", 0, {})  # no question: nothing asked, no max_tokens
    assert chat[1][0].startswith('[{"role":"system","content":"be \\"brief\\"\\n"}') and chat[1][1] == 17
    assert chat[2][2] == {"s": "web", "i": "3", "f": "0.00001", "b": "true", "n": "null",
                          "o": '{"k":[1,2.5]}', "u": 'ünï "q"'}


def test_a_value_only_the_engine_sees_is_refused_not_wrapped(db: Database) -> None:  # noqa: F811
    good = encode(Result("good", "acme", "llm", submitted_at=1.7e9))
    for field, value in (("prompt_tokens", -1), ("completion_tokens", 2**32 + 5),
                         ("cost_usd", 1e12), ("attempts", -3)):
        bad = good.replace(b'"query_id":"good"', f'"query_id":"bad","{field}":{value}'.encode())
        with pytest.raises(RowsRefused):
            insert_result_messages(db, RESULTS_TABLE, [good, bad])
    assert db.query("SELECT count() FROM pointsman.results WHERE query_id = 'bad'")[1] == [(0,)]


def test_a_batch_file_that_cannot_be_written_is_retried_not_dead_lettered(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # as a full /tmp would fail
    writer = SinkWriter(db, TOPICS)
    with pytest.raises(RetryableError, match="cannot write the insert's batch file"):
        writer(messages([Result("r", "acme", "llm", submitted_at=1.7e9)]))
    assert writer.dead_lettered == 0
    monkeypatch.undo()
    writer(messages([Result("r", "acme", "llm", submitted_at=1.7e9)]))  # the retry
    assert db.query("SELECT count() FROM pointsman.results")[1] == [(1,)]
