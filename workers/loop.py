"""The consume -> process -> produce -> commit loop every worker role shares.

Offsets are committed only after the batch's outputs are acknowledged by the broker, so a
process killed at any point replays, and never skips, what it had not finished.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka_io import Outgoing, OutputProducer, new_consumer
from topics.errors import RetryableError

log = logging.getLogger(__name__)

T = TypeVar("T")
Process = Callable[[list[Message]], None]  # must finish its output or raise; then we commit
Handler = Callable[[list[Message]], list[Outgoing]]


@dataclass(frozen=True)
class LoopSettings:
    bootstrap: str
    group: str
    topics: tuple[str, ...]
    batch_size: int = 32
    batch_wait_s: float = 0.05


class StopFlag:
    """Set by SIGINT/SIGTERM (or a test); the loop finishes its batch, commits and exits."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.set())


def producing(handle: Handler, producer: OutputProducer) -> Process:
    """A Process that sends a handler's outputs and waits for the broker to acknowledge them."""

    def process(batch: list[Message]) -> None:
        producer.send(handle(batch))
        producer.deliver()

    return process


def run_loop(settings: LoopSettings, process: Process, stop: StopFlag) -> None:
    consumer = new_consumer(settings.bootstrap, settings.group, list(settings.topics))
    try:
        while not stop.is_set():
            messages = consumer.consume(settings.batch_size, timeout=settings.batch_wait_s)
            batch = [m for m in messages if usable(m)]
            if batch:
                finish(consumer, batch, process, stop)
    finally:
        consumer.close()


def run_overlapped_loop(settings: LoopSettings, prepare: Callable[[list[Message]], T],
                        store: Callable[[T], None], stop: StopFlag) -> None:
    """run_loop in two steps that overlap: while one batch is stored (on a thread of its own,
    where the work is mostly outside the GIL, as a database insert is) the next is consumed and
    prepared. The guarantee is run_loop's: offsets are committed in order, each only after its
    batch is stored, and a store that fails with RetryableError is retried until it is done."""
    consumer = new_consumer(settings.bootstrap, settings.group, list(settings.topics))
    pending: tuple[Future[None], list[Message]] | None = None  # the batch being stored
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="store") as storing:
            while not stop.is_set():
                messages = consumer.consume(settings.batch_size, timeout=settings.batch_wait_s)
                batch = [m for m in messages if usable(m)]
                if batch:
                    prepared = prepare(batch)
                if pending is not None and (batch or pending[0].done()):
                    future, stored = pending
                    pending = None
                    future.result()  # its RetryableError, once stopping, ends the loop here
                    commit(consumer, stored)
                if batch:
                    pending = (storing.submit(until_done, prepared, store, stop), batch)
            if pending is not None:
                pending[0].result()
                commit(consumer, pending[1])
    finally:
        consumer.close()  # the executor's exit has waited for a store in flight


def finish(consumer: Consumer, batch: list[Message], process: Process, stop: StopFlag) -> None:
    """Process the batch until it is done, then commit past it."""
    until_done(batch, process, stop)
    commit(consumer, batch)


def commit(consumer: Consumer, batch: list[Message]) -> None:
    try:
        consumer.commit(offsets=next_offsets(batch), asynchronous=False)
    except KafkaException as exc:
        # lost the partitions in a rebalance: the new owner redoes the batch and the
        # duplicates collapse on query id downstream
        log.warning("commit failed, batch will be redelivered: %s", exc)


def until_done(work: T, process: Callable[[T], None], stop: StopFlag) -> None:
    delay = 0.5
    while True:
        try:
            process(work)
            return
        except RetryableError as exc:
            # the broker or the database hiccupped: redo the batch without committing
            # (duplicates are absorbed downstream by query id); it is never dropped
            if stop.is_set():
                raise
            log.warning("batch failed, retrying in %.1fs: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return False


def next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offset to commit per partition: one past the last message processed."""
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic(), message.partition())
        last[key] = max(last.get(key, -1), message.offset())
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in last.items()]
