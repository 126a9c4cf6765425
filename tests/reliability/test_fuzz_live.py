"""Fuzzed messages of every malformed kind, mixed with valid ones, through the live pipeline."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_strategies import malformed, valid_query
from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.reliability.conftest import outcome

pytestmark = pytest.mark.integration

batches = st.lists(st.tuples(st.just("valid"), valid_query()) | st.tuples(st.just("bad"), malformed),
                   min_size=40, max_size=80)


@pytest.fixture()
def running(pipeline: Pipeline) -> Pipeline:
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "always-slm"
    pipeline.start("sink", "router", "slm")
    return pipeline


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches)
def test_fuzzed_batches_keep_the_invariant(running: Pipeline, broker: str,
                                           batch: list[tuple[str, bytes]]) -> None:
    seen = getattr(running, "fuzz_seen", {"ids": set(), "bad": 0, "sent": 0})
    running.fuzz_seen = seen  # type: ignore[attr-defined]  # hypothesis reuses the fixture
    seen["ids"] |= {json.loads(raw)["id"] for kind, raw in batch if kind == "valid"}
    seen["bad"] += sum(kind == "bad" for kind, _ in batch)
    seen["sent"] += len(batch)
    send(running, broker, [raw for _, raw in batch])
    assert running.wait_until(RESULTS, len(seen["ids"]), timeout=120) == len(seen["ids"])
    assert running.wait_until(LETTERS, seen["bad"], timeout=60) == seen["bad"]
    record = outcome(running, "fuzzed inputs (hypothesis)", seen["sent"], seen["ids"], seen["bad"])
    assert record["lost"] == 0 and record["unexpected"] == 0
    assert record["duplicated_rows_after_dedup"] == 0 and record["dead_lettered"] == seen["bad"]
