"""An AnsweredIndex (workers/answered.py) kept current from the results topic, for any worker.

The reading is pipeline/cache_feed.py's ResultsFeed, the one the routers use: every partition,
from a lookback. It lives here, in the app layer, because workers never import pipeline/.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.cache_feed import ResultsFeed
from workers.answered import AnsweredIndex

log = logging.getLogger(__name__)


def answered_feed(bootstrap: str, results_topic: str, *, lookback_s: float,
                  warmup_s: float) -> tuple[AnsweredIndex, ResultsFeed]:
    """The index and its running feed, caught up (or `warmup_s` spent) when returned; the
    caller stops the feed."""
    index = AnsweredIndex(ttl_s=lookback_s)
    started = time.monotonic()
    wait_for_offsets(bootstrap, results_topic, warmup_s)
    feed = ResultsFeed(bootstrap, results_topic, index.learn, lookback_s=lookback_s)
    feed.start()
    if not feed.caught_up.wait(max(1.0, warmup_s - (time.monotonic() - started))):
        log.warning("results read-back not caught up after %.0fs; starting anyway", warmup_s)
    return index, feed


def wait_for_offsets(bootstrap: str, topic: str, timeout_s: float) -> bool:
    """Until the topic's partitions answer an offset lookup. Just after the topics are created
    (a fresh broker: this role's own ensure_topics) they answer NOT_LEADER for a moment, and a
    ResultsFeed that starts then stops for good."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pointsman-offsets-probe-unused",
                         "enable.auto.commit": False})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                consumer.offsets_for_times([TopicPartition(topic, p, 0) for p in partitions], timeout=10)
                return True
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    log.warning("%s does not answer offset lookups yet: %s", topic, exc)
                    return False
                time.sleep(0.5)
    finally:
        consumer.close()
