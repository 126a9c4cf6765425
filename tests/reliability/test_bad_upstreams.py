"""Fault suite: an upstream that answers badly (issue 9). The real pipeline (router, LLM worker,
sink) against a stand-in that mixes good answers with the ways real upstreams and proxies fail:
a valid body trickled one byte at a time, fields of the wrong type, a 3 MB body, a 401 that
echoes the request's Authorization header, and token counts out of any counter's range.

The invariant holds (every valid id one row, every error a dead letter), the API key appears
nowhere (results, dead letters, role logs, the raw Kafka topics), trickled calls end at the
timeout, and stopping the LLM worker is bounded even with calls hanging upstream: those are
cancelled, stay uncommitted, and are answered after the restart. Recorded as one mixed row.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness import Pipeline
from tests.integration.test_pipeline import RESULTS, send
from tests.reliability.test_faults import assert_invariant, llm_only, run_workload
from workers.llm_standin import Faults, StandinLLM, StandinServer

pytestmark = pytest.mark.integration

KEY = f"sk-bad-upstream-{uuid.uuid4().hex}"
TIMEOUT_S = 2.0
TRICKLE_GAP_S = 0.25  # every byte well within the timeout: only a bound on the whole call helps
MIXED = Faults(trickle=0.08, wrong_types=0.08, huge_body=0.04, echo_auth=0.04, bad_usage=0.08,
               trickle_gap_s=TRICKLE_GAP_S, seed=11)
FAULT = "bad upstream answers (trickle, wrong types, 3 MB body, 401 echoing the key, bad usage)"
UINT32_MAX = 2**32 - 1


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini", faults=MIXED)).start()
    yield server
    server.stop()


def topic_bytes(broker: str, topics: list[str]) -> bytes:
    """Every key and value in `topics`, from the first offset to the end, as one blob."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"scan-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    blob: list[bytes] = []
    try:
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                consumer.assign([TopicPartition(topic, partition, low)])
                position, deadline = low, time.monotonic() + 30
                while position < high and time.monotonic() < deadline:
                    message = consumer.poll(1.0)
                    if message is None or message.error() is not None:
                        continue
                    blob += [message.key() or b"", message.value() or b""]
                    position = message.offset() + 1
                assert position >= high, f"{topic}[{partition}] read to {position} of {high}"
    finally:
        consumer.close()
    return b"\n".join(blob)


def test_bad_upstream_answers_never_pin_a_partition_or_leak_the_key(
        pipeline: Pipeline, broker: str, upstream: StandinServer) -> None:
    llm_only(pipeline, upstream.base_url, POINTSMAN_LLM_API_KEY=KEY,
             POINTSMAN_LLM_TIMEOUT_S=str(TIMEOUT_S))
    pipeline.start("sink", "router", "llm")
    record = run_workload(pipeline, broker, 150, FAULT, seed=3)
    assert_invariant(record)
    llm = upstream.llm
    assert all(llm.drawn.get(f, 0) > 0 for f in ("trickle", "wrong_types", "huge_body", "echo_auth",
                                                   "bad_usage")), llm.drawn
    reader = pipeline.reader()
    errors = " ".join(r[0] for r in reader.query(
        "SELECT error FROM pointsman.results FINAL WHERE error != ''")[1])
    assert "malformed completion" in errors and "response over 1048576 bytes" in errors
    assert "answered 401" in errors and "[REDACTED]" in errors
    # bad usage is clamped into UInt32 at the client, so the sink stores the row
    assert reader.query("SELECT max(completion_tokens) FROM pointsman.results FINAL")[1][0][0] == UINT32_MAX
    # each trickled call was cut at the timeout (it would have taken minutes to finish)
    assert llm.trickle_seconds and max(llm.trickle_seconds) < TIMEOUT_S + TRICKLE_GAP_S + 1.5, \
        llm.trickle_seconds

    started = time.monotonic()
    assert pipeline.stop("llm", timeout=30) == 0
    assert time.monotonic() - started < 15

    # stop with calls hanging upstream (a 60 s timeout): bounded, and the open calls replay
    llm.faults = Faults(hang=1.0)
    pipeline.env["POINTSMAN_LLM_TIMEOUT_S"] = "60"
    pipeline.start("llm")
    answered = pipeline.count(RESULTS)
    send(pipeline, broker, [f'{{"id": "held-{i}", "text": "held question {i}"}}'.encode()
                            for i in range(3)])
    deadline = time.monotonic() + 60
    while llm.in_flight < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert llm.in_flight == 3
    started = time.monotonic()
    assert pipeline.stop("llm", timeout=30) == 0
    assert time.monotonic() - started < 15
    llm.faults = Faults()
    pipeline.start("llm")
    assert pipeline.wait_until(RESULTS, answered + 3, timeout=60) == answered + 3
    held = [tuple(r) for r in reader.query("SELECT query_id, error FROM pointsman.results FINAL "
                        "WHERE startsWith(query_id, 'held-') ORDER BY query_id")[1]]
    assert held == [("held-0", ""), ("held-1", ""), ("held-2", "")]

    # the key never left the process: not in ClickHouse, the role logs or the raw topics
    for table in ("results", "dead_letters"):
        rows = reader.query(f"SELECT * FROM pointsman.{table}")[1]
        assert rows and KEY not in repr(rows), table
    logs = "".join(p.read_text(errors="replace") for p in pipeline.logs.iterdir())
    assert logs and KEY not in logs
    raw = topic_bytes(broker, [pipeline.topics.results, pipeline.topics.deadletter])
    assert b"answered 401" in raw and KEY.encode() not in raw
