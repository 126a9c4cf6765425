"""The SLM worker's consume loop with two lanes: live micro-batches first, backfill in the gaps.

It keeps run_loop's guarantee (workers/loop.py): a batch's offsets are committed only after its
outputs are acknowledged, so a kill replays and never skips. What it adds: messages read from
each lane wait in a local queue, and workers/lanes.py decides which lane the next micro-batch
comes from. A partition belongs to one lane and each lane's queue is first in, first out, so
every batch holds the earliest unprocessed messages of its partitions: committing one past the
batch never passes a message still waiting. Waiting messages of a revoked partition are dropped
(its next owner reads them from the committed offset); duplicates are absorbed downstream.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from infra.kafka_io import new_consumer
from workers.lanes import LiveYield, Lookahead, plan_batch
from workers.loop import Process, StopFlag, finish, usable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneLoopSettings:
    bootstrap: str
    group: str
    live_topic: str
    backfill_topic: str
    batch_size: int = 16
    batch_wait_s: float = 0.05
    backfill_batch: int = 4  # a backfill micro-batch's cap while live traffic is about
    yield_s: float = 0.5  # the backfill waits while live requests came within this window
    calm_s: float = 30.0  # live away this long: backfill batches grow to batch_size


class _Lanes:
    """Each lane's messages read but not processed yet, and the backfill partitions' pause."""

    def __init__(self, consumer: Consumer, settings: LaneLoopSettings) -> None:
        self.consumer = consumer
        self.settings = settings
        self.live: deque[Message] = deque()
        self.backfill: deque[Message] = deque()
        self.lookahead = Lookahead.of(2 * max(settings.batch_size, settings.backfill_batch))
        self.paused = False
        self.assigned: set[tuple[str, int]] = set()  # kept by the rebalance callbacks
        self.paused_parts: set[tuple[str, int]] = set()

    def read(self, timeout: float) -> bool:
        """Read what is there (waiting up to `timeout` for a first message); True if live came."""
        room = self.settings.batch_size + max(0, self.lookahead.high - len(self.backfill))
        live = self._sort(self.consumer.consume(room, timeout=timeout))
        if not self.paused and self.lookahead.paused(len(self.backfill), False):
            self.set_paused(True)
            # pausing drops what librdkafka had prefetched for the backfill: a live message
            # queued behind that prefetch is readable now, not after the backlog
            live |= self._sort(self.consumer.consume(self.settings.batch_size, timeout=0))
        return live

    def _sort(self, messages: list[Message]) -> bool:
        live = False
        for message in messages:
            if not usable(message):
                continue
            if message.topic() == self.settings.backfill_topic:
                self.backfill.append(message)
            else:
                self.live.append(message)
                live = True
        return live

    def set_paused(self, pause: bool) -> None:
        """Pausing again touches only backfill partitions assigned since (they start unpaused)."""
        if pause:
            fresh = [tp for tp in self.assigned
                     if tp[0] == self.settings.backfill_topic and tp not in self.paused_parts]
            if fresh:
                self.consumer.pause([TopicPartition(t, p) for t, p in fresh])
                self.paused_parts.update(fresh)
        elif self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused_parts])
            self.paused_parts.clear()
        self.paused = pause

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def forget(self, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned -= revoked
        self.paused_parts -= revoked  # assigned again, a partition starts unpaused
        for queue in (self.live, self.backfill):
            kept = [m for m in queue if (m.topic(), m.partition()) not in revoked]
            queue.clear()
            queue.extend(kept)


def run_lane_loop(settings: LaneLoopSettings, process: Process, stop: StopFlag) -> None:
    lanes: _Lanes | None = None

    def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if lanes is not None:
            lanes.forget(partitions)

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if lanes is not None:
            lanes.assign(partitions)

    consumer = new_consumer(settings.bootstrap, settings.group,
                            [settings.live_topic, settings.backfill_topic],
                            on_revoke=on_revoke, on_assign=on_assign)
    lanes = _Lanes(consumer, settings)
    live_yield = LiveYield(settings.yield_s, settings.calm_s)
    try:
        while not stop.is_set():
            open_now = live_yield.backfill_open(time.monotonic())
            ready = lanes.live or (lanes.backfill and open_now)
            if lanes.read(0.0 if ready else settings.batch_wait_s):
                live_yield.saw_live(time.monotonic())
            now = time.monotonic()
            open_now = live_yield.backfill_open(now)
            lanes.set_paused(not open_now or lanes.lookahead.paused(len(lanes.backfill),
                                                                    lanes.paused))
            n_live, n_backfill = plan_batch(
                live_waiting=len(lanes.live), backfill_waiting=len(lanes.backfill),
                batch_size=settings.batch_size, backfill_open=open_now,
                backfill_batch=live_yield.backfill_batch(now, short=settings.backfill_batch,
                                                         full=settings.batch_size))
            batch = ([lanes.live.popleft() for _ in range(n_live)]
                     + [lanes.backfill.popleft() for _ in range(n_backfill)])
            if not batch:
                continue
            finish(consumer, batch, process, stop)
            if n_live:  # the window counts from the live batch's delivery
                live_yield.saw_live(time.monotonic())
    finally:
        consumer.close()
