"""Getting queries into Kafka: one text, or a JSONL file line by line (live or backfill lane)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from infra.kafka_io import Outgoing, OutputProducer
from pipeline.validate import DEFAULT_LIMITS
from topics.codec import encode, raw_text
from topics.limits import MAX_MESSAGE_BYTES, encode_dead_letter, truncate_marked
from topics.names import Topics
from topics.schemas import DeadLetter, Query


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


class FileSent(NamedTuple):
    sent: int  # lines produced as queries
    dead_lettered: int  # lines too large to send, kept as dead letters instead


def deadletter_topic_for(topic: str) -> str:
    """The dead-letter topic next to a queries (or backfill) topic, same prefix."""
    for lane in (Topics().backfill, Topics().queries):
        if topic.endswith(lane):
            return Topics(topic[: -len(lane)]).deadletter
    raise ValueError(f"{topic!r} is not a queries topic: give the dead-letter topic")


def unsent_letter(line: bytes, reason: str, *, key: str, number: int, topic: str,
                  deadletter: str) -> Outgoing:
    """A line that is not sent as a query, as a dead letter: the reason and a marked head of it.
    It never reached Kafka, so partition is -1 and offset holds the line number."""
    letter = DeadLetter(
        reason=reason, raw=truncate_marked(raw_text(line), DEFAULT_LIMITS.max_query_bytes),
        source_topic=topic, partition=-1, offset=number, key=key, failed_at=time.time())
    return Outgoing(deadletter, key.encode(), encode_dead_letter(letter))


def oversized_letter(line: bytes, name: str, number: int, topic: str, deadletter: str,
                     limit: int = MAX_MESSAGE_BYTES) -> Outgoing:
    """A line the broker cannot take, as a dead letter."""
    reason = (f"{name} line {number}: {len(line)} bytes, over the {limit} byte message limit; "
              "not sent as a query")
    return unsent_letter(line, reason, key=f"{name}:{number}", number=number, topic=topic,
                         deadletter=deadletter)


def produce_file(bootstrap: str, topic: str, path: Path, *, deadletter: str | None = None,
                 progress: bool = False, chunk: int = 5000) -> FileSent:
    """Send each line as one query. A line over the broker's limit cannot be a message: it goes
    to the dead-letter topic (`deadletter`, default the one next to `topic`) with its line number
    and size, a warning is printed, and the rest of the file is sent."""
    deadletter = deadletter or deadletter_topic_for(topic)
    producer = OutputProducer(bootstrap)
    total = sum(1 for _ in file_lines(path)) if progress else None
    sent = letters = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{path.name} -> {topic}", total=total)
        batch: list[Outgoing] = []
        for number, line in enumerate(file_lines(path), start=1):
            if len(line) > MAX_MESSAGE_BYTES:
                batch.append(oversized_letter(line, path.name, number, topic, deadletter))
                letters += 1
                bar.console.print(f"[yellow]warning:[/] {path.name} line {number} is "
                                  f"{len(line)} bytes, over the {MAX_MESSAGE_BYTES} byte limit: "
                                  f"kept as a dead letter on {deadletter}, not sent")
            else:
                batch.append(Outgoing(topic, None, line))
                sent += 1
            if len(batch) >= chunk:
                producer.send(batch)
                producer.deliver()
                bar.update(task, advance=len(batch))
                batch = []
        producer.send(batch)
        producer.deliver()
        bar.update(task, advance=len(batch))
    return FileSent(sent, letters)


def produce_one(bootstrap: str, message: Outgoing) -> None:
    producer = OutputProducer(bootstrap)
    producer.send([message])
    producer.deliver()
