"""Feeds every result on the results topic into the router's caches.

Each router process reads *all* partitions of the results topic (no consumer group), starting
from one cache TTL ago, so a restarted or newly added router starts with a warm cache and
adding routers never lowers the hit rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from topics.codec import decode
from topics.errors import InvalidMessage
from topics.schemas import Result

log = logging.getLogger(__name__)


class ResultsFeed:
    def __init__(
        self, bootstrap: str, topic: str, on_results: Callable[[list[Result]], None], *,
        lookback_s: float,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._on_results = on_results
        self._lookback_s = lookback_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results-feed", daemon=True)
        self.caught_up = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _assign(self, consumer: Consumer) -> list[int]:
        """Assign every partition at its offset one lookback ago. Just after the topics are
        created (a fresh broker) they answer NOT_LEADER for a moment: retry until they answer,
        or the feed is stopped, rather than give up for good with a cold cache."""
        delay = 0.2
        while True:
            try:
                partitions = list(consumer.list_topics(self._topic, timeout=30)
                                  .topics[self._topic].partitions)
                since_ms = int((time.time() - self._lookback_s) * 1000)
                wanted = [TopicPartition(self._topic, p, since_ms) for p in partitions]
                starts = consumer.offsets_for_times(wanted, timeout=30)
                break
            except KafkaException as exc:
                if self._stop.wait(delay):
                    raise
                log.info("results feed: %s not readable yet (%s); retrying", self._topic, exc)
                delay = min(delay * 2, 5.0)
        # a partition with nothing newer than `since` answers -1: start at its end
        consumer.assign([
            TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in starts
        ])
        return partitions

    def _run(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self._bootstrap,
            "group.id": "pointsman-results-feed-unused",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        })
        try:
            partitions = self._assign(consumer)
            at_eof: set[int] = set()
            while not self._stop.is_set():
                results = []
                for message in consumer.consume(1000, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_eof.add(message.partition())
                        else:
                            log.warning("results feed: %s", error)
                        continue
                    try:
                        results.append(decode(message.value(), Result))
                    except InvalidMessage as exc:
                        log.warning("results feed skipped a bad result: %s", exc.reason)
                if results:
                    self._on_results(results)  # one batch: the semantic index grows per batch
                if len(at_eof) == len(partitions):
                    self.caught_up.set()  # after learning the batch that reached the end
        except Exception:
            log.exception("results feed stopped")
        finally:
            self.caught_up.set()  # never leave the router waiting on a feed that is gone
            consumer.close()
