"""run_overlapped_loop (workers/loop.py) against the real broker: the next batch is prepared
while one is stored, every message is stored once and in order, a store that fails for a
while is retried, and offsets are committed only past what was stored."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from infra.kafka_io import Outgoing, OutputProducer
from topics.admin import ensure_topics
from topics.errors import RetryableError
from topics.names import TopicSpec
from workers.loop import LoopSettings, StopFlag, run_overlapped_loop

pytestmark = pytest.mark.integration

MESSAGES = 60


class Recorder:
    """A prepare/store pair that logs what ran when; the second store fails twice first."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.events: list[tuple[str, int]] = []  # ("prepare" | "store start" | "store end", batch)
        self.stored: list[int] = []
        self.prepared = 0
        self.failures_left = 2
        self.lock = threading.Lock()

    def prepare(self, batch: list[Message]) -> tuple[int, list[int]]:
        number = self.prepared
        self.prepared += 1
        with self.lock:
            self.events.append(("prepare", number))
        return number, [int(m.value()) for m in batch]

    def store(self, prepared: tuple[int, list[int]]) -> None:
        number, values = prepared
        with self.lock:
            self.events.append(("store start", number))
        time.sleep(0.3)  # long enough for the loop to consume and prepare the next batch
        if number == 1 and self.failures_left:
            self.failures_left -= 1
            raise RetryableError("the database hiccupped")
        self.stored.extend(values)
        with self.lock:
            self.events.append(("store end", number))
        if len(self.stored) == MESSAGES:
            self.stop.set()


def test_batches_overlap_are_stored_once_in_order_and_committed(broker: str) -> None:
    topic, group = f"overlap-{uuid.uuid4().hex[:8]}", f"overlap-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 1, {})])
    producer = OutputProducer(broker)
    producer.send([Outgoing(topic, None, str(i).encode()) for i in range(MESSAGES)])
    producer.deliver()
    stop = StopFlag()
    recorder = Recorder(stop)
    loop = threading.Thread(target=run_overlapped_loop, daemon=True, args=(
        LoopSettings(broker, group, (topic,), batch_size=10, batch_wait_s=0.2),
        recorder.prepare, recorder.store, stop))
    loop.start()
    loop.join(120)
    assert not loop.is_alive()
    assert recorder.stored == list(range(MESSAGES))  # once each, in order, the retried batch too
    assert recorder.failures_left == 0
    events = recorder.events
    # a later batch was prepared while an earlier one was being stored
    assert any(events.index(("prepare", n + 1)) < events.index(("store end", n))
               for n in range(recorder.prepared - 1))
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed[0].offset == MESSAGES
