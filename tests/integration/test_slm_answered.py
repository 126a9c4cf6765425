"""The SLM worker on the real broker with the real (tiny) model: what the results topic already
answers is never inferred again, however long ago it was answered."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka_io import Outgoing, OutputProducer
from pipeline.config import Config
from pipeline.roles import serve_slm
from topics.admin import ensure_topics
from topics.codec import decode, encode
from topics.names import Topics
from topics.schemas import Query, Result, RouteRequest, Timings
from workers.loop import StopFlag
from workers.slm.engine import SlmEngine

pytestmark = pytest.mark.integration


class CountingEngine:
    """The real engine, counting the prompts it is asked to run."""

    def __init__(self, engine: SlmEngine) -> None:
        self.engine, self.model_name, self.prompts = engine, engine.model_name, 0

    def generate(self, prompts: list, **kw: object) -> list:
        self.prompts += len(prompts)
        return self.engine.generate(prompts, **kw)


def route_request(qid: str, text: str) -> Outgoing:
    now = time.time()
    request = RouteRequest(query=Query(id=qid, text=text, tenant="acme", max_tokens=4), query_id=qid,
                           fingerprint=f"fp-{text}", track="slm", reason="test",
                           submitted_at=now, routed_at=now, timings=Timings())
    return Outgoing("", request.fingerprint.encode(), encode(request))


def send(broker: str, topic: str, out: list[Outgoing]) -> None:
    producer = OutputProducer(broker)
    producer.send([dataclasses.replace(o, topic=topic) for o in out])
    producer.deliver()


class ResultsSeen:
    def __init__(self, broker: str, topics: Topics) -> None:
        self.consumer = Consumer({"bootstrap.servers": broker, "group.id": f"seen-{uuid.uuid4()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topics.results])
        self.results: list[Result] = []

    def wait_for(self, ids: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= {r.query_id for r in self.results} and time.monotonic() < deadline:
            for message in self.consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    self.results.append(decode(message.value(), Result))
        assert ids <= {r.query_id for r in self.results}, "results missing"


def wait_until_consumed(broker: str, group: str, topic: str, timeout: float = 60) -> None:
    """The worker's group has committed up to the end of every partition of `topic`."""
    probe = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        wanted = [TopicPartition(topic, p) for p in partitions]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = {tp.partition: tp.offset for tp in probe.committed(wanted, timeout=10)}
            ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in partitions}
            if all(committed[p] >= ends[p] for p in partitions):
                return
            time.sleep(0.3)
        raise AssertionError(f"{group} did not consume {topic}: {committed} of {ends}")
    finally:
        probe.close()


def test_replayed_requests_are_not_inferred_again_after_the_recent_window(
        broker: str, tiny_model: Path) -> None:
    topics = Topics(f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker, topics.specs(partitions=3))
    config = Config(bootstrap=broker, topic_prefix=topics.prefix, slm_model=tiny_model,
                    slm_threads=1, slm_escalate_below=0)
    # the worker's own memory of its answers lasts half a second here (two minutes by default)
    settings = dataclasses.replace(config.slm(), recent_ttl_s=0.5, answered_warmup_s=10)
    engine = CountingEngine(SlmEngine(tiny_model, threads=1))
    stop = StopFlag()
    worker = threading.Thread(target=serve_slm, args=(settings, stop, engine), daemon=True)
    worker.start()
    seen = ResultsSeen(broker, topics)
    try:
        first = [route_request(f"q{i}", f"question {i}") for i in range(6)]
        send(broker, topics.route_slm, first)
        seen.wait_for({f"q{i}" for i in range(6)})
        inferred = engine.prompts
        assert inferred == 6
        time.sleep(1.5)  # well past the recent window: only the results topic remembers now

        # the same requests replayed (a backlog, a crash before commit), two new askers of old
        # questions, and one new question
        again = [*first, route_request("copy-1", "question 1"), route_request("copy-2", "question 2"),
                 route_request("new", "a new question")]
        send(broker, topics.route_slm, again)
        seen.wait_for({"copy-1", "copy-2", "new"})
        wait_until_consumed(broker, settings.group, topics.route_slm)
        assert engine.prompts == inferred + 1  # only the new question ran the model
        per_id = Counter(r.query_id for r in seen.results)
        assert all(per_id[f"q{i}"] == 1 for i in range(6)), per_id  # replays were skipped
        by_id = {r.query_id: r for r in seen.results}
        assert by_id["copy-1"].route == "coalesced" and by_id["copy-1"].answer == by_id["q1"].answer
        assert by_id["new"].route == "slm"
    finally:
        stop.set()
        worker.join(30)
        seen.consumer.close()
