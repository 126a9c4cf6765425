"""`pointsman bench router`: router throughput against a plain confluent-kafka loop, one run.

Three measurements on the same broker and the same pre-filled topic:
  core      RouterCore.route_batch in-process, no Kafka: the CPU cost of the decisions alone
  baseline  a plain confluent-kafka consume -> produce -> commit loop (the ceiling for Python)
  naive     a per-message Faust agent (one await send per event): the usual first attempt
  router    the real Faust router process (`pointsman run router`)
Kafka rates count from the first output message to the last, so process start-up is excluded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from infra import kafka
from infra.kafka_io import Outgoing, OutputProducer, new_consumer
from pipeline.config import Config
from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import make_policy
from pipeline.router import faust_datadir
from topics.admin import ensure_topics
from topics.names import Topics, TopicSpec


def workload(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if i % 100 == 99:
            lines.append(b'{"tenant": "acme", "text": 42}')  # 1% malformed
            continue
        j = rng.randrange(n) if rng.random() < 0.2 else i  # 20% repeats
        lines.append(json.dumps({"id": f"b{i}", "tenant": ("acme", "globex")[j % 2],
                                 "text": f"Question number {j}: what is {j} squared? ünï",
                                 "max_tokens": 64}, ensure_ascii=False).encode())
    return lines


def bench_core(lines: list[bytes], topics: Topics) -> dict[str, Any]:
    core = RouterCore(topics, make_policy("baseline-length"), ExactCache())
    batch = [Incoming(topics.queries, 0, i, time.time(), None, v) for i, v in enumerate(lines)]
    started = time.perf_counter()
    for i in range(0, len(batch), 2000):
        core.route_batch(batch[i:i + 2000], time.time())
    seconds = time.perf_counter() - started
    return {"name": "core (no Kafka)", "messages": len(lines), "seconds": seconds}


def _outputs(consumer: Consumer, topics: list[str]) -> int:
    total = 0
    for topic in topics:
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            with contextlib.suppress(KafkaException):  # a new topic's leader may not be known yet
                total += consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    return total


def _time_outputs(bootstrap: str, topics: list[str], expected: int, timeout: float) -> float:
    """Seconds from the first output message to the last."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "pointsman-bench-probe"})
    first = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            seen = _outputs(probe, topics)
            now = time.perf_counter()
            if seen > 0 and first is None:
                first = now
            if seen >= expected:
                return now - (first or now)
            time.sleep(0.02)
    finally:
        probe.close()
    raise TimeoutError(f"only {seen}/{expected} outputs after {timeout}s")


def bench_baseline(bootstrap: str, topics: Topics, n: int, out_topic: str) -> dict[str, Any]:
    """consume -> produce each message unchanged -> flush -> commit, in batches of 2000."""
    consumer = new_consumer(bootstrap, f"bench-baseline-{uuid.uuid4().hex[:6]}", [topics.queries])
    producer = OutputProducer(bootstrap)
    done, started = 0, None
    while done < n:
        messages = [m for m in consumer.consume(2000, timeout=1.0) if m.error() is None]
        if not messages:
            continue
        started = started or time.perf_counter()
        producer.send([Outgoing(out_topic, m.key(), m.value()) for m in messages])
        producer.deliver()
        consumer.commit(asynchronous=False)
        done += len(messages)
    seconds = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return {"name": "plain confluent-kafka loop", "messages": n, "seconds": seconds}


def _time_process(config: Config, args: list[str], env: dict[str, str], outputs: Topics,
                  n: int) -> float:
    """Start a Python process routing into `outputs`; seconds from its first output to its n-th."""
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        topics = [outputs.route_slm, outputs.route_llm, outputs.results, outputs.deadletter]
        return _time_outputs(config.bootstrap, topics, n, timeout=600)
    finally:
        proc.terminate()
        proc.wait(30)


def bench_router_process(config: Config, topics: Topics, n: int, *, semantic: bool) -> dict[str, Any]:
    # the router consumes as its own group (named after the prefix): a second run needs its own
    # copy of the input, so it gets its own prefix with the same messages
    env = {**os.environ, "POINTSMAN_TOPIC_PREFIX": topics.prefix,
           "POINTSMAN_KAFKA_BOOTSTRAP": config.bootstrap,
           "POINTSMAN_SEMANTIC_CACHE": "on" if semantic else "off"}
    seconds = _time_process(config, ["-m", "pipeline.cli", "run", "router"], env, topics, n)
    name = "Faust router, semantic cache on" if semantic else "Faust router (1 process)"
    return {"name": name, "messages": n, "seconds": seconds}


def naive_app(bootstrap: str, topics: Topics) -> None:
    """Run a per-message Faust agent over the same topics (what the router improves on)."""
    import faust

    app_id = f"{topics.prefix}naive"
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://",
                    datadir=faust_datadir(app_id), web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True)
    core = RouterCore(topics, make_policy("baseline-length"), ExactCache())
    source = app.topic(topics.queries, key_serializer="raw", value_serializer="raw")
    sinks: dict[str, Any] = {}

    @app.agent(source)
    async def naive(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            out = core.route_one(Incoming(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value),
                                 time.time())
            sink = sinks.get(out.topic) or sinks.setdefault(out.topic, app.topic(
                out.topic.replace(topics.prefix, topics.prefix + "naive.", 1),
                key_serializer="raw", value_serializer="raw"))
            await sink.send(key=out.key, value=out.value)

    worker = faust.Worker(app, loglevel="error", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


def bench_naive_process(config: Config, topics: Topics, n: int) -> dict[str, Any]:
    naive = Topics(topics.prefix + "naive.")
    ensure_topics(config.bootstrap, naive.specs(config.partitions))
    seconds = _time_process(config, ["-m", "pipeline.bench", config.bootstrap, topics.prefix],
                            dict(os.environ), naive, n)
    return {"name": "naive per-message Faust agent", "messages": n, "seconds": seconds}


def bench_router(config: Config, console: Console, *, messages: int, as_json: bool) -> None:
    with kafka.started(config.kafka()):
        _bench_router(config, console, messages=messages, as_json=as_json)


def _bench_router(config: Config, console: Console, *, messages: int, as_json: bool) -> None:
    run = uuid.uuid4().hex[:8]
    topics, semantic_topics = Topics(f"bench-{run}."), Topics(f"bench-{run}-semantic.")
    out = TopicSpec(topics.prefix + "baseline.out", config.partitions, {})
    ensure_topics(config.bootstrap, [*topics.specs(config.partitions),
                                     *semantic_topics.specs(config.partitions), out])
    lines = workload(messages)
    producer = Producer({"bootstrap.servers": config.bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 2_000_000})
    for target in (topics, semantic_topics):
        for line in lines:
            producer.produce(target.queries, line)
        producer.flush()
    rows = [bench_core(lines, topics),
            bench_baseline(config.bootstrap, topics, messages, out.name),
            bench_naive_process(config, topics, messages),
            bench_router_process(config, topics, messages, semantic=False),
            bench_router_process(config, semantic_topics, messages, semantic=True)]
    for row in rows:
        row["per_s"] = round(row["messages"] / row["seconds"]) if row["seconds"] else None
    baseline = rows[1]["per_s"]
    for row in rows:
        row["vs_baseline"] = round(row["per_s"] / baseline, 2) if baseline and row["per_s"] else None
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"router throughput, {messages} messages, {config.partitions} partitions")
    for column in ("name", "messages", "seconds", "per_s", "vs_baseline"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["messages"]), f"{row['seconds']:.2f}",
                      str(row["per_s"]), str(row["vs_baseline"]))
    console.print(table)


if __name__ == "__main__":  # the naive agent's own process: python -m pipeline.bench BOOTSTRAP PREFIX
    naive_app(sys.argv[1], Topics(sys.argv[2]))
