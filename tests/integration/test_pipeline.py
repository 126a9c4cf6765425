"""The whole pipeline on real parts: Kafka broker, Faust router, worker groups, ClickHouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.kafka_io import Outgoing, OutputProducer
from tests.harness import Pipeline
from tests.integration.workload import Workload, make_workload

pytestmark = pytest.mark.integration

RESULTS = "SELECT count() FROM pointsman.results FINAL"
LETTERS = "SELECT count() FROM pointsman.dead_letters FINAL"


def send(pipeline: Pipeline, broker: str, lines: list[bytes], topic: str | None = None) -> None:
    producer = OutputProducer(broker)
    producer.send([Outgoing(topic or pipeline.topics.queries, None, line) for line in lines])
    producer.deliver()


def assert_exactly_once_rows(pipeline: Pipeline, work: Workload) -> None:
    ids = [row[0] for row in pipeline.reader().query(
        "SELECT query_id FROM pointsman.results FINAL")[1]]
    assert len(ids) == len(set(ids)), "a query id has more than one row"
    assert set(ids) == work.valid_ids
    assert pipeline.count(LETTERS) == work.malformed


def test_workload_end_to_end(pipeline: Pipeline, broker: str) -> None:
    work = make_workload(1500, seed=1)
    pipeline.start("sink", "router", "slm", "llm")
    send(pipeline, broker, work.lines)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=240) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=30) == work.malformed
    assert_exactly_once_rows(pipeline, work)
    routes = dict(pipeline.reader().query(
        "SELECT route, count() FROM pointsman.results FINAL GROUP BY route")[1])
    assert routes.get("slm", 0) > 0 and routes.get("llm", 0) > 0
    # every duplicate was answered without a new inference
    assert routes.get("cache", 0) + routes.get("coalesced", 0) == work.duplicates
    reasons = {r[0] for r in pipeline.reader().query(
        "SELECT reason FROM pointsman.dead_letters FINAL")[1]}
    assert {"not JSON", "not a JSON object", "empty text"} <= reasons
    assert any(r.startswith("text too long") for r in reasons)
    # every timing column is filled for inferred answers
    slow = pipeline.reader().query(
        "SELECT min(total_ms), min(inference_ms) FROM pointsman.results FINAL "
        "WHERE route IN ('slm', 'llm')")[1][0]
    assert slow[0] > 0 and slow[1] > 0


def test_cache_never_crosses_tenants(pipeline: Pipeline, broker: str) -> None:
    pipeline.start("sink", "router", "slm", "llm")
    first = [json.dumps({"id": f"a{i}", "tenant": "acme", "text": "shared question",
                         "max_tokens": 8}).encode() for i in range(3)]
    send(pipeline, broker, first)
    assert pipeline.wait_until(RESULTS, 3) == 3
    send(pipeline, broker, [json.dumps({"id": "g1", "tenant": "globex", "text": "shared question",
                                        "max_tokens": 8}).encode()])
    assert pipeline.wait_until(RESULTS, 4) == 4
    rows = dict(pipeline.reader().query(
        "SELECT query_id, route FROM pointsman.results FINAL")[1])
    assert rows["g1"] == "slm"
    assert sorted(rows[f"a{i}"] for i in range(3)).count("slm") == 1


def test_sql_and_report_work_while_sink_holds_the_database(pipeline: Pipeline, broker: str) -> None:
    pipeline.start("sink", "router", "slm")
    send(pipeline, broker, [json.dumps({"id": "s1", "text": "hi", "max_tokens": 4}).encode()])
    assert pipeline.wait_until(RESULTS, 1) == 1
    out = pipeline.cli("sql", "SELECT query_id, route FROM pointsman.results FINAL",
                       "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["query_id,route", "s1,slm"]
    out = pipeline.cli("sql", "SELECT query_id FROM pointsman.results", "--format", "json")
    assert json.loads(out.stdout) == {"query_id": "s1"}
    report = pipeline.cli("report", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["totals"]["queries"] == 1
    bad = pipeline.cli("sql", "SELECT nope FROM nowhere")
    assert bad.returncode == 2 and "pointsman:" in bad.stderr


def test_backfill_lane_and_produce_commands(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.start("sink", "router", "slm")
    pipeline.reader()  # the sink holds the database: the CLI reads through its endpoint
    file = tmp_path / "history.jsonl"
    file.write_text("\n".join(json.dumps({"id": f"b{i}", "text": f"old question {i}",
                                          "max_tokens": 4}) for i in range(50)) + "\nnot json\n")
    out = pipeline.cli("backfill", str(file))
    assert out.returncode == 0, out.stderr
    out = pipeline.cli("produce", "a live question", "--id", "live-1", "--max-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert pipeline.wait_until(RESULTS, 51) == 51
    assert pipeline.wait_until(LETTERS, 1) == 1
    source = pipeline.reader().query("SELECT source_topic FROM pointsman.dead_letters FINAL")[1]
    assert source[0][0] == pipeline.topics.backfill


def test_replaying_results_never_double_counts(pipeline: Pipeline, broker: str) -> None:
    work = make_workload(200, seed=3, run="r")
    pipeline.start("sink", "router", "slm", "llm")
    send(pipeline, broker, work.lines)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids)) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed) == work.malformed
    first_written = pipeline.count("SELECT toUnixTimestamp64Milli(max(inserted_at)) FROM pointsman.results")
    pipeline.stop("sink")
    rewind(broker, f"{pipeline.topics.prefix}pointsman-sink",
           [pipeline.topics.results, pipeline.topics.deadletter])
    pipeline.start("sink")
    # every row really was written again: at an equal version FINAL keeps the last insert, so each
    # query's row is then the replayed one (a count without FINAL would race background merges)
    rewritten = pipeline.wait_until(
        "SELECT count() FROM pointsman.results FINAL "
        f"WHERE toUnixTimestamp64Milli(inserted_at) > {first_written}", len(work.valid_ids), timeout=60)
    assert rewritten == len(work.valid_ids)
    assert_exactly_once_rows(pipeline, work)  # ... and still counts once


def rewind(broker: str, group: str, topics: list[str]) -> None:
    """Reset a stopped consumer group to the start of its topics: what an operator does to replay."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker})
    metadata = admin.list_topics(timeout=10).topics
    partitions = [TopicPartition(t, p, 0) for t in topics for p in metadata[t].partitions]
    futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])
    for future in futures.values():
        future.result(30)
