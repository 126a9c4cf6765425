"""confluent-kafka clients with Pointsman's delivery defaults, and an output producer that
confirms delivery before the caller commits its input offsets (at-least-once)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from topics.errors import PermanentError, RetryableError
from topics.limits import MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


class MessageTooLarge(PermanentError):
    """A value over MAX_MESSAGE_BYTES: the broker would refuse it, so it is never handed over."""


def checked(out: Outgoing) -> Outgoing:
    """The last guard before librdkafka: callers shrink outputs (topics.limits); a value that
    still does not fit is a bug, reported here with the topic and size instead of a bare
    MSG_SIZE_TOO_LARGE."""
    if len(out.value) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"refusing a {len(out.value)} byte value for {out.topic}: "
            f"limit {MAX_MESSAGE_BYTES} (shrink it with topics.limits first)")
    return out


# delivery errors that a resend cannot fix: the broker will refuse the same bytes again
_PERMANENT_DELIVERY = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                                 KafkaError.INVALID_RECORD})


def delivery_error(error: KafkaError, what: str) -> RetryableError | PermanentError:
    kind = PermanentError if error.code() in _PERMANENT_DELIVERY else RetryableError
    return kind(f"{what}: {error}")


def _produce_error(out: Outgoing, exc: KafkaException) -> PermanentError:
    return PermanentError(f"could not produce to {out.topic} ({len(out.value)} bytes): {exc}")


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,  # retries inside librdkafka never duplicate or reorder
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        **overrides,
    }


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,  # we commit only after our output is delivered
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        **overrides,
    }


class OutputProducer:
    """Produce a batch, then wait until the broker has acknowledged every message of it."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._errors: list[KafkaError] = []

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def send(self, batch: list[Outgoing]) -> None:
        """Hand the batch to librdkafka; raises MessageTooLarge / PermanentError for a message it
        cannot take (what came before it in the batch is still sent: `deliver` waits for it)."""
        produce = self._producer.produce
        for out in batch:
            checked(out)
            while True:
                try:
                    produce(out.topic, out.value, out.key, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: serve callbacks, then try again
                    with ctrl_c_outside_callbacks():
                        self._producer.poll(0.05)
                except KafkaException as exc:
                    raise _produce_error(out, exc) from None

    def deliver(self, timeout: float = 60.0) -> None:
        """Block until everything sent so far is acknowledged; raise if anything failed."""
        with ctrl_c_outside_callbacks() as interrupted:
            deadline = time.monotonic() + timeout
            remaining = self._producer.flush(0)
            while remaining and not interrupted() and (left := deadline - time.monotonic()) > 0:
                remaining = self._producer.flush(min(left, FLUSH_SLICE_S))
        errors, self._errors = self._errors, []
        if remaining:
            raise RetryableError(f"{remaining} messages not delivered in time")
        if errors:
            permanent = [e for e in errors if e.code() in _PERMANENT_DELIVERY]
            raise delivery_error((permanent or errors)[0], f"{len(errors)} messages failed delivery")


FLUSH_SLICE_S = 0.2  # how soon a Ctrl-C held off during a flush takes effect


@contextmanager
def ctrl_c_outside_callbacks() -> Iterator[Callable[[], bool]]:
    """Where Ctrl-C raises KeyboardInterrupt (a CLI's main thread, Python's own handler), hold it
    off inside the block and raise it after. A flush runs the delivery callbacks in Python; a
    KeyboardInterrupt raised inside one is lost by confluent-kafka (2.16.1), which reports a
    SystemError instead ("flush returned NULL without setting an exception"), so a Ctrl-C'd
    backfill crashed instead of pausing. The block sees whether one came, to stop waiting.
    Elsewhere (a role's own SIGINT handler, other threads) nothing changes."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class PipelinedProducer:
    """Produce batches without waiting for the broker: `send` returns a future that resolves when
    every message of the batch is acknowledged, so a caller can ack its input then while it
    already works on the next batch. At most `max_in_flight` batches are outstanding: beyond that
    `send` waits, which is the back-pressure on the consumer. Call `poll_forever` as a task.

    A batch that cannot be handed over (a message too large, any produce() error) does not raise:
    its future fails at once and its slot is free again, so a bad batch never leaks a slot."""

    def __init__(self, bootstrap: str, *, max_in_flight: int = 8, **overrides: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._slots = asyncio.Semaphore(max_in_flight)

    async def send(self, batch: list[Outgoing]) -> asyncio.Future[None]:
        await self._slots.acquire()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: self._slots.release())
        remaining = len(batch)

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            nonlocal remaining
            remaining -= 1
            if done.done():
                return
            if error is not None:
                done.set_exception(delivery_error(error, "delivery failed"))
            elif remaining == 0:
                done.set_result(None)

        if not batch:
            done.set_result(None)
        produce = self._producer.produce
        out = None
        try:
            for out in batch:
                checked(out)
                while True:
                    try:
                        produce(out.topic, out.value, out.key, on_delivery=on_delivery)
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self._producer.poll(0)
                        await asyncio.sleep(0.01)
        except Exception as exc:
            # messages already handed over still call on_delivery; they find `done` failed
            if isinstance(exc, KafkaException) and out is not None:
                exc = _produce_error(out, exc)
            if not done.done():
                done.set_exception(exc if isinstance(exc, PermanentError)
                                   else PermanentError(f"produce failed: {exc!r}"))
        except BaseException:  # cancelled mid-batch: free the slot, then let it propagate
            if not done.done():
                done.cancel()
            raise
        return done

    async def poll_forever(self, interval_s: float = 0.003) -> None:
        # delivery callbacks run inside poll(), here on the event loop: no thread hand-off
        while True:
            self._producer.poll(0)
            await asyncio.sleep(interval_s)

    def flush(self, timeout: float = 30.0) -> int:
        return self._producer.flush(timeout)


def new_consumer(bootstrap: str, group: str, topics: list[str], *,
                 on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
                 on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
                 **overrides: Any) -> Consumer:
    consumer = Consumer(consumer_config(bootstrap, group, **overrides))
    callbacks = {name: callback for name, callback in
                 (("on_revoke", on_revoke), ("on_assign", on_assign)) if callback is not None}
    consumer.subscribe(topics, **callbacks)
    return consumer
