"""Ctrl-C while a delivery callback runs, against the real broker: the CLI's producer raises
KeyboardInterrupt (so `backfill` pauses and exits 130), never confluent-kafka's SystemError."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra.kafka_io import Outgoing, OutputProducer
from topics.admin import ensure_topics
from topics.names import TopicSpec

pytestmark = pytest.mark.integration


@pytest.fixture()
def default_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_a_delivery_callback_is_a_keyboard_interrupt(
        broker: str, default_handler: None) -> None:
    topic = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 1, {})])
    producer = OutputProducer(broker)
    on_delivery = producer._on_delivery

    def interrupted_delivery(*args: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the callback runs
        on_delivery(*args)

    producer._on_delivery = interrupted_delivery  # type: ignore[method-assign]
    producer.send([Outgoing(topic, None, b"x")])
    with pytest.raises(KeyboardInterrupt):
        producer.deliver()
    producer._on_delivery = on_delivery  # type: ignore[method-assign]
    producer.send([Outgoing(topic, None, b"y")])
    producer.deliver()  # the producer still works after it
