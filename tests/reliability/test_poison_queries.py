"""Poison queries on the real pipeline: JSON nested a thousand deep, values near the broker's
1 MB limit (some of bytes that escape six-fold), duplicate keys and garbage times, mixed into a
batch of valid queries. Every valid query is answered once, every bad one is a dead letter with
its reason, and the router stays up, keeps routing and stops promptly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from infra.kafka_io import MessageTooLarge, Outgoing, OutputProducer, PipelinedProducer
from pipeline.produce import FileSent, produce_file
from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant
from topics.admin import ensure_topics
from topics.codec import decode
from topics.errors import PermanentError
from topics.limits import MAX_MESSAGE_BYTES
from topics.names import Topics, TopicSpec
from topics.schemas import DeadLetter

pytestmark = pytest.mark.integration


def _head(marker: str) -> bytes:
    return b'{"id": "' + marker.encode() + b'", "text": "hi", '


# marker (the start of the raw value, so the letter can be found) -> (raw, expected reason)
POISON: dict[str, tuple[bytes, str]] = {
    "deep-arrays": (_head("deep-arrays") + b'"metadata": ' + b"[" * 1000 + b"]" * 1000 + b"}",
                    "nested too deeply"),
    "deep-objects": (_head("deep-objects") + b'"metadata": ' + b'{"a": ' * 1000 + b"1"
                     + b"}" * 1000 + b"}", "nested too deeply"),
    # just under what our producer may send; raw \x01 bytes escape to \u0001 in the dead letter
    "near-1mb-escaping": (_head("near-1mb-escaping") + b'"metadata": {"blob": "'
                          + b"\x01" * (MAX_MESSAGE_BYTES - 200) + b'"}}', "query too large"),
    "near-1mb-json": (_head("near-1mb-json") + b'"metadata": {"blob": "'
                      + b"\\u0001" * ((MAX_MESSAGE_BYTES - 200) // 6) + b'"}}', "query too large"),
    "dup-tenant": (_head("dup-tenant") + b'"tenant": "acme", "tenant": "globex"}',
                   "duplicate key 'tenant'"),
    "dup-nested": (_head("dup-nested") + b'"metadata": {"job": {"n": 1, "n": 2}}}',
                   "duplicate key 'n'"),
    "time-1e20": (_head("time-1e20") + b'"submitted_at": 1e20}', "in the future"),
    "time-1999": (_head("time-1999") + b'"submitted_at": 915148800}', "before 2000-01-01"),
    "time-nan": (_head("time-nan") + b'"submitted_at": NaN}', "NaN"),
}


def valid(marker: str, i: int, **extra: object) -> bytes:
    return json.dumps({"id": f"{marker}{i}", "text": f"poison run question {marker} {i}?",
                       "max_tokens": 4, **extra}).encode()


def test_poison_queries_never_hurt_their_neighbours(pipeline: Pipeline, broker: str) -> None:
    pipeline.start("sink", "router", "slm", "llm")
    lines: list[bytes] = []
    valid_ids: set[str] = set()
    for i, (raw, _) in enumerate(POISON.values()):
        for j in range(4):  # valid neighbours on both sides of each poison message
            lines.append(valid("ok", 10 * i + j, submitted_at=time.time()))
            valid_ids.add(f"ok{10 * i + j}")
        lines.append(raw)
    # big but within the limit: routed, and the result that copies it still fits
    lines.append(valid("big", 0, metadata={"blob": "y" * 200_000}))
    valid_ids.add("big0")
    send(pipeline, broker, lines)
    assert pipeline.wait_until(RESULTS, len(valid_ids), timeout=180) == len(valid_ids)
    assert pipeline.wait_until(LETTERS, len(POISON), timeout=60) >= len(POISON)

    letters = pipeline.reader().query(
        "SELECT substring(raw, 1, 40), reason, length(raw) FROM pointsman.dead_letters FINAL")[1]
    by_marker = {}
    for head, reason, size in letters:
        marker = next((m for m in POISON if f'"id": "{m}"' in head), None)
        assert marker is not None, f"unexpected dead letter {head!r}: {reason}"
        by_marker[marker] = (reason, size)
    for marker, (_, want) in POISON.items():
        assert marker in by_marker, f"{marker}: no dead letter"
        assert want in by_marker[marker][0], (marker, by_marker[marker])
    # the oversized ones are kept as a marked head, not dropped and not whole
    for marker in ("near-1mb-escaping", "near-1mb-json"):
        assert 1000 < by_marker[marker][1] < MAX_MESSAGE_BYTES

    record = outcome(pipeline, "poison queries (1000-deep JSON, ~1 MB, duplicate keys, bad times)",
                     len(lines), valid_ids, len(POISON))
    assert_invariant(record)

    # still alive and routing
    assert pipeline.procs["router"].poll() is None
    send(pipeline, broker, [valid("canary", 0)])
    assert pipeline.wait_until(RESULTS, len(valid_ids) + 1, timeout=60) == len(valid_ids) + 1

    started = time.monotonic()
    pipeline.stop("router", timeout=20)
    assert time.monotonic() - started < 15, "router took too long to stop on SIGTERM"


def test_pipelined_producer_frees_its_slot_when_produce_raises(broker: str) -> None:
    async def scenario() -> None:
        # one slot: a leaked slot would make the next send wait forever
        producer = PipelinedProducer(broker, max_in_flight=1, **{"message.max.bytes": 10_000})
        poller = asyncio.create_task(producer.poll_forever())
        try:
            topic = f"poison-slots-{time.time_ns()}"
            ensure_topics(broker, [TopicSpec(topic, 1, {})])
            # librdkafka itself refuses it (MSG_SIZE_TOO_LARGE from produce())
            refused = await asyncio.wait_for(producer.send(
                [Outgoing(topic, None, b"ok"), Outgoing(topic, None, b"x" * 50_000)]), 5)
            with pytest.raises(PermanentError, match="MSG_SIZE_TOO_LARGE"):
                await asyncio.wait_for(refused, 5)
            # our guard refuses it before librdkafka sees it
            guarded = await asyncio.wait_for(
                producer.send([Outgoing(topic, None, b"x" * (MAX_MESSAGE_BYTES + 1))]), 5)
            with pytest.raises(MessageTooLarge, match=f"limit {MAX_MESSAGE_BYTES}"):
                await asyncio.wait_for(guarded, 5)
            delivered = await asyncio.wait_for(producer.send([Outgoing(topic, None, b"fine")]), 5)
            await asyncio.wait_for(delivered, 30)
        finally:
            poller.cancel()
            producer.flush(10)

    asyncio.run(scenario())
    # the blocking producer: a clear error naming the topic, then it carries on
    topic = f"poison-block-{time.time_ns()}"
    ensure_topics(broker, [TopicSpec(topic, 1, {})])
    blocking = OutputProducer(broker)
    with pytest.raises(MessageTooLarge, match=f"refusing a 900001 byte value for {topic}"):
        blocking.send([Outgoing(topic, None, b"x" * 900_001)])
    blocking.send([Outgoing(topic, None, b"ok")])
    blocking.deliver(30)


def _set_max_message_bytes(broker: str, topics: list[str], value: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value),
                    incremental_operation=AlterConfigOpType.SET)]) for topic in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(30)


def test_router_exits_without_committing_when_the_broker_refuses_its_output(
        pipeline: Pipeline, broker: str) -> None:
    """An output the broker refuses (here: a topic limit far below ours) is a router that cannot
    make progress: it exits non-zero at once, and after the restart the same events are replayed
    and answered: nothing was committed past them."""
    routes = [pipeline.topics.route_slm, pipeline.topics.route_llm]
    _set_max_message_bytes(broker, routes, 2000)
    pipeline.start("router")
    # random hex barely compresses, so the batch stays over the topic's 2000 bytes
    lines = [valid("refused", 0, metadata={"blob": os.urandom(10_000).hex()}),
             *(valid("beside", i) for i in range(3))]
    send(pipeline, broker, lines)
    router = pipeline.procs["router"]
    try:
        code = router.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("router kept running (or hung stopping) after its output was refused")
    assert code != 0
    pipeline.procs.pop("router")
    log = (pipeline.logs / "router.log").read_text(errors="replace")
    assert "not delivered" in log and "MSG_SIZE_TOO_LARGE" in log

    _set_max_message_bytes(broker, routes, 1_048_588)
    pipeline.start("sink", "router", "slm", "llm")
    ids = {"refused0", "beside0", "beside1", "beside2"}
    assert pipeline.wait_until(RESULTS, len(ids), timeout=120) == len(ids)
    record = outcome(pipeline, "broker refuses router output (exit, replay)", len(lines), ids, 0)
    assert_invariant(record)


def _drain(broker: str, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"drain-{time.time_ns()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_produce_file_keeps_an_oversized_line_as_a_dead_letter(broker: str, tmp_path) -> None:
    topics = Topics(f"pf{time.time_ns()}.")
    ensure_topics(broker, topics.specs(partitions=1))
    huge = b'{"id": "huge", "text": "' + b"\x01" * 1_200_000 + b'"}'
    path = tmp_path / "queries.jsonl"
    path.write_bytes(b"\n".join([valid("line", 1), huge, valid("line", 3)]) + b"\n")
    assert produce_file(broker, topics.queries, path) == FileSent(sent=2, dead_lettered=1)
    sent = _drain(broker, topics.queries, 2)
    assert [json.loads(v)["id"] for v in sent] == ["line1", "line3"]
    [value] = _drain(broker, topics.deadletter, 1)
    assert len(value) <= MAX_MESSAGE_BYTES
    letter = decode(value, DeadLetter)
    assert letter.reason == (f"queries.jsonl line 2: {len(huge)} bytes, over the "
                             f"{MAX_MESSAGE_BYTES} byte message limit; not sent as a query")
    assert letter.raw.startswith('{"id": "huge"') and "[truncated: " in letter.raw
    assert (letter.source_topic, letter.partition, letter.offset) == (topics.queries, -1, 2)
