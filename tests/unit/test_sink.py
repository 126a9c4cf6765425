"""SinkWriter's rows from real encoded messages; a fake database records the inserts."""

from __future__ import annotations

from typing import Any

from pipeline.sink import DEAD_LETTER_COLUMNS, RESULT_COLUMNS, SinkWriter
from topics.codec import encode
from topics.names import Topics
from topics.schemas import Result

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


class Database:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        self.rows.setdefault(table, []).extend(dict(zip(columns, r, strict=True)) for r in rows)


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
