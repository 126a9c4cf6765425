"""Ids on the real pipeline (issue 9, item 11). The rules: an id names a query within its tenant;
the same id under two tenants is two queries (two rows, two dead letters when both fail); the
same id and tenant with different content is kept as a second row (told apart by fingerprint),
never silently dropped; a duplicate JSON key is a dead letter, never "last one wins"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, send
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import llm_only
from workers.llm_standin import Faults, StandinLLM, StandinServer

pytestmark = pytest.mark.integration

ROWS = "SELECT count() FROM pointsman.results FINAL"


@pytest.fixture()
def failing_upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini", faults=Faults(server_error=1.0))).start()
    yield server
    server.stop()


def query(qid: str, tenant: str, text: str) -> bytes:
    return json.dumps({"id": qid, "tenant": tenant, "text": text, "max_tokens": 8}).encode()


def test_ids_collide_across_tenants_and_contents_without_loss(
        pipeline: Pipeline, broker: str, failing_upstream: StandinServer) -> None:
    llm_only(pipeline, failing_upstream.base_url, POINTSMAN_LLM_RETRIES="0")
    pipeline.start("sink", "router", "llm")
    lines = [
        query("shared", "acme", "what is the boiling point of water?"),
        query("shared", "globex", "what is the boiling point of water?"),
        query("twice", "acme", "first text under this id"),
        query("twice", "acme", "second, different text under the same id"),
        b'{"id": "dupkey", "tenant": "acme", "tenant": "globex", "text": "who am I?"}',
    ]
    send(pipeline, broker, lines)
    assert pipeline.wait_until(ROWS, 4, timeout=120) == 4
    failures = ("SELECT count() FROM pointsman.dead_letters FINAL "
                "WHERE query_id IN ('shared', 'twice')")
    assert pipeline.wait_until(failures, 4, timeout=60) == 4
    assert pipeline.wait_until(LETTERS, 5, timeout=60) == 5
    reader = pipeline.reader()
    rows = reader.query("SELECT query_id, tenant, uniqExact(fingerprint), count(), "
                        "countIf(error != '') FROM pointsman.results FINAL "
                        "GROUP BY query_id, tenant ORDER BY query_id, tenant")[1]
    assert [tuple(r) for r in rows] == [("shared", "acme", 1, 1, 1), ("shared", "globex", 1, 1, 1),
                                        ("twice", "acme", 2, 2, 2)]
    letters = reader.query("SELECT tenant, reason FROM pointsman.dead_letters FINAL "
                           f"WHERE query_id = '' AND source_topic = '{pipeline.topics.queries}'")[1]
    assert [(t, r) for t, r in letters] == [("", "duplicate key 'tenant'")]
    record = outcome(pipeline, "ids: one id under two tenants, two texts under one id, duplicate key",
                     len(lines), {"shared", "twice"}, 1)
    assert record["lost"] == 0 and record["errors_without_dead_letter"] == 0, record
    assert record["duplicated_rows_after_dedup"] == 0, record
