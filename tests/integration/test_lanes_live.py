"""Live first in the workers, end to end: real broker, Faust router, LLM worker on a slow
stand-in upstream, SLM worker on the real tiny model slowed to a CPU model's pace. Live queries
sent while a backlog of backfill queries is being answered are answered without queueing behind
it, on both tracks, and the backfill still completes once live traffic is idle."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.kafka_io import Outgoing, OutputProducer
from pipeline.config import Config
from pipeline.roles import serve_slm
from tests.harness import Pipeline, pipeline_env
from topics.codec import decode
from topics.schemas import Result
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.loop import StopFlag
from workers.slm.engine import SlmEngine

pytestmark = pytest.mark.integration

UPSTREAM_S = 0.5  # every stand-in call takes this long
SLM_BATCH_S = 0.25  # every SLM micro-batch takes at least this long
BACKFILL = 300  # per track
LIVE = 8  # per track


class PacedEngine:
    """The real tiny engine at the pace of a real CPU model: each micro-batch takes SLM_BATCH_S."""

    def __init__(self, engine: SlmEngine) -> None:
        self.engine, self.model_name = engine, engine.model_name

    def generate(self, prompts: list, **kw: Any) -> list:  # type: ignore[type-arg]
        started = time.monotonic()
        out = self.engine.generate(prompts, **kw)
        time.sleep(max(0.0, SLM_BATCH_S - (time.monotonic() - started)))
        return out


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini",
                                      faults=Faults(slow=1.0, slow_s=UPSTREAM_S))).start()
    yield server
    server.stop()


@pytest.fixture()
def lanes_pipeline(pipeline: Pipeline, broker: str, tiny_model: Path, tmp_path: Path,
                   upstream: StandinServer) -> Iterator[Pipeline]:
    pipeline.env = pipeline_env(broker, pipeline.topics.prefix, tmp_path, tiny_model,
                                POINTSMAN_LLM_BASE_URL=upstream.base_url,
                                POINTSMAN_LLM_CONCURRENCY="16",
                                POINTSMAN_TENANT_ROUTES="to-slm=slm,to-llm=llm")
    pipeline.start("router", "llm")
    config = Config(bootstrap=broker, topic_prefix=pipeline.topics.prefix, slm_model=tiny_model,
                    slm_threads=1, slm_escalate_below=0.0)
    settings = dataclasses.replace(config.slm(), answered_warmup_s=10)
    stop = StopFlag()
    worker = threading.Thread(target=serve_slm, daemon=True,
                              args=(settings, stop, PacedEngine(SlmEngine(tiny_model, threads=1))))
    worker.start()
    yield pipeline
    stop.set()
    worker.join(30)


class ResultsWatch:
    """Every result on the test's results topic, read by a plain consumer from the beginning."""

    def __init__(self, broker: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": broker, "group.id": f"w{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: dict[str, Result] = {}

    def poll(self, seconds: float = 0.2) -> None:
        for message in self.consumer.consume(1000, timeout=seconds):
            if message.error() is None:
                result = decode(message.value(), Result)
                self.seen.setdefault(result.query_id, result)

    def count(self, prefix: str) -> int:
        return sum(1 for qid in self.seen if qid.startswith(prefix))

    def wait(self, done: Any, timeout: float, what: str, pipeline: Pipeline) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what}: only {len(self.seen)} results"
            pipeline._check_alive()
            self.poll()


def query(qid: str, tenant: str, **extra: Any) -> bytes:
    return json.dumps({"id": qid, "tenant": tenant, "text": f"question {qid}", "max_tokens": 8,
                       **extra}).encode()


@pytest.fixture()
def watch(lanes_pipeline: Pipeline, broker: str) -> Iterator[ResultsWatch]:
    watching = ResultsWatch(broker, lanes_pipeline.topics.results)
    yield watching
    watching.consumer.close()


def test_live_queries_do_not_queue_behind_a_backfill_and_the_backfill_completes(
        lanes_pipeline: Pipeline, watch: ResultsWatch, broker: str) -> None:
    pipeline, topics = lanes_pipeline, lanes_pipeline.topics
    producer = OutputProducer(broker)
    producer.send([Outgoing(topics.backfill, None, query(f"bf-{track}-{i}", f"to-{track}"))
                   for i in range(BACKFILL) for track in ("slm", "llm")])
    producer.deliver()
    # both workers are answering the backlog before the first live query comes
    watch.wait(lambda: watch.count("bf-slm-") >= 10 and watch.count("bf-llm-") >= 10, 60,
               "backfill started", pipeline)
    for i in range(LIVE):
        producer.send([Outgoing(topics.queries, None,
                                query(f"live-{track}-{i}", f"to-{track}", submitted_at=time.time()))
                       for track in ("slm", "llm")])
        producer.deliver()
        watch.poll(0.25)
    watch.wait(lambda: watch.count("live-") == 2 * LIVE, 30, "live answered", pipeline)
    latency = {track: max(r.timings.total_ms for qid, r in watch.seen.items()
                          if qid.startswith(f"live-{track}-")) / 1000 for track in ("slm", "llm")}
    backlog = {track: BACKFILL - watch.count(f"bf-{track}-") for track in ("slm", "llm")}
    # behind the backlog they would wait for most of it: seconds of stand-in calls (300 / 16
    # slots x 0.5 s) and of SLM batches (300 / 16 x 0.25 s); live first, they wait for one
    # backfill call or batch at most
    assert latency["llm"] < 4 * UPSTREAM_S, (latency, backlog)
    assert latency["slm"] < 10 * SLM_BATCH_S, (latency, backlog)
    # the live queries came while most of the backfill was still waiting (or this shows nothing)
    assert backlog["slm"] > BACKFILL // 3 and backlog["llm"] > BACKFILL // 3, backlog
    assert {r.lane for qid, r in watch.seen.items() if qid.startswith("live-")} == {"live"}
    # with live idle again, the backfill gets the workers back and finishes
    watch.wait(lambda: watch.count("bf-") == 2 * BACKFILL, 60, "backfill finished", pipeline)
    assert {r.lane for qid, r in watch.seen.items() if qid.startswith("bf-")} == {"backfill"}
    assert not [r.error for r in watch.seen.values() if r.error]
