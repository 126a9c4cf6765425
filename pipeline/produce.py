"""Getting queries into Kafka: one text, or a JSONL file line by line (live or backfill lane)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from infra.kafka_io import Outgoing, OutputProducer
from topics.codec import encode
from topics.schemas import Query


def query_message(topic: str, text: str, *, tenant: str = "default", max_tokens: int = 256,
                  query_id: str | None = None) -> Outgoing:
    query = Query(id=query_id or uuid.uuid4().hex, tenant=tenant, text=text,
                  max_tokens=max_tokens, submitted_at=time.time())
    return Outgoing(topic, query.id.encode() if query.id else None, encode(query))


def file_lines(path: Path) -> Iterator[bytes]:
    """Each line as raw bytes, unmodified but for its line ending: the router judges it."""
    with path.open("rb") as f:
        for line in f:
            yield line.rstrip(b"\r\n")


def produce_file(bootstrap: str, topic: str, path: Path, *, progress: bool = False,
                 chunk: int = 5000) -> int:
    producer = OutputProducer(bootstrap)
    total = sum(1 for _ in file_lines(path)) if progress else None
    sent = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{path.name} -> {topic}", total=total)
        batch: list[Outgoing] = []
        for line in file_lines(path):
            batch.append(Outgoing(topic, None, line))
            if len(batch) >= chunk:
                producer.send(batch)
                producer.deliver()
                sent += len(batch)
                bar.update(task, advance=len(batch))
                batch = []
        producer.send(batch)
        producer.deliver()
        sent += len(batch)
        bar.update(task, advance=len(batch))
    return sent


def produce_one(bootstrap: str, message: Outgoing) -> None:
    producer = OutputProducer(bootstrap)
    producer.send([message])
    producer.deliver()
