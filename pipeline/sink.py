"""ClickHouse sink: results and dead letters from Kafka into pointsman.* tables, in batches.

A batch is inserted, then its offsets are committed. If ClickHouse refuses, the batch is retried
with backoff and consumption waits: rows are never dropped. Replays are absorbed by the tables'
ReplacingMergeTree keys, so inserting a batch twice never double counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import Message

from infra.clickhouse import Database
from topics.codec import decode, raw_text
from topics.errors import InvalidMessage, RetryableError
from topics.names import Topics
from topics.schemas import DeadLetter, Result
from workers.loop import LoopSettings, StopFlag, run_loop

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "query_id", "tenant", "route", "model", "answer", "error", "prompt_tokens",
    "completion_tokens", "cost_usd", "confidence", "similarity", "fingerprint", "route_reason",
    "submitted_at", "completed_at", "queued_ms", "routed_ms", "wait_ms", "inference_ms", "total_ms",
]
DEAD_LETTER_COLUMNS = [
    "letter_id", "source_topic", "partition", "offset", "reason", "raw", "key", "query_id",
    "tenant", "failed_at",
]


@dataclass(frozen=True)
class SinkSettings:
    bootstrap: str
    topics: Topics
    dsn: str
    batch_size: int = 5000
    batch_wait_s: float = 0.5
    group: str = "pointsman-sink"


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def result_row(r: Result) -> list[Any]:
    t = r.timings
    return [
        r.query_id, r.tenant, r.route, r.model, r.answer, r.error or "", r.prompt_tokens,
        r.completion_tokens, r.cost_usd, r.confidence, r.similarity, r.fingerprint,
        r.route_reason, _time(r.submitted_at), _time(r.completed_at), t.queued_ms, t.routed_ms,
        t.wait_ms, t.inference_ms, t.total_ms,
    ]


def dead_letter_row(d: DeadLetter) -> list[Any]:
    letter_id = (
        f"{d.source_topic}:{d.partition}:{d.offset}" if d.offset >= 0
        else f"{d.source_topic}:{d.query_id}"
    )
    return [
        letter_id, d.source_topic, d.partition, d.offset, d.reason, d.raw, d.key or "",
        d.query_id or "", d.tenant or "", _time(d.failed_at),
    ]


class SinkWriter:
    def __init__(self, database: Database, topics: Topics) -> None:
        self.database = database
        self.topics = topics
        self.rows_written = 0

    def __call__(self, batch: list[Message]) -> None:
        results, letters = [], []
        for message in batch:
            try:
                if message.topic() == self.topics.deadletter:
                    letters.append(dead_letter_row(decode(message.value(), DeadLetter)))
                else:
                    results.append(result_row(decode(message.value(), Result)))
            except InvalidMessage as exc:
                # only our code writes these topics, so this is a bug or a foreign producer:
                # keep the bytes as a dead-letter row with the reason, never stall the stream
                log.error("sink kept an undecodable message at %s:%d:%d as a dead letter: %s",
                          message.topic(), message.partition(), message.offset(), exc.reason)
                letters.append(dead_letter_row(DeadLetter(
                    reason=f"sink: undecodable: {exc.reason}", raw=raw_text(message.value()),
                    source_topic=message.topic(), partition=message.partition(),
                    offset=message.offset(), failed_at=time.time())))
        try:
            if results:
                self.database.insert("pointsman.results", results, RESULT_COLUMNS)
            if letters:
                self.database.insert("pointsman.dead_letters", letters, DEAD_LETTER_COLUMNS)
        except ClickHouseError as exc:
            raise RetryableError(f"ClickHouse insert failed: {exc}") from None
        self.rows_written += len(results) + len(letters)


def run_sink(settings: SinkSettings, database: Database, stop: StopFlag) -> None:
    loop = LoopSettings(
        settings.bootstrap, settings.group, (settings.topics.results, settings.topics.deadletter),
        settings.batch_size, settings.batch_wait_s,
    )
    run_loop(loop, SinkWriter(database, settings.topics), stop)
