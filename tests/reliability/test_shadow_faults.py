"""Fault suite: shadow evaluation at rate 1 while the upstream fails 30% of calls with a 500.

Shadow calls share the upstream with live LLM traffic. The invariant still holds for every user
query (one row each, every failure a dead letter); a shadow whose call fails is dropped, never
an error result, a dead letter or a second row for its query; every judged row belongs to a
query the SLM answered. Recorded as one row.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.roles import serve_llm, serve_slm
from tests.harness import Pipeline
from tests.reliability.test_faults import assert_invariant, run_workload
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.loop import StopFlag
from workers.slm.engine import SlmEngine

pytestmark = pytest.mark.integration

FAULT = "shadow rate 1 under a failing upstream (30% 500s)"


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini", faults=Faults(server_error=0.3, seed=5)))
    yield server.start()
    server.stop()


def test_failed_shadows_are_dropped_and_users_never_see_them(
        pipeline: Pipeline, broker: str, tiny_model: Path, upstream: StandinServer) -> None:
    pipeline.env.update(POINTSMAN_LLM_BASE_URL=upstream.base_url, POINTSMAN_LLM_TIMEOUT_S="1.0",
                        POINTSMAN_LLM_RETRIES="3")
    config = Config.from_env(pipeline.env)
    stop = StopFlag()
    # the workers run in this process so their shadow rate can be set (the CLI reads the env)
    slm = dataclasses.replace(config.slm(), shadow_rate=1.0, answered_warmup_s=5)
    llm = dataclasses.replace(config.llm(), answered_warmup_s=5)
    workers = [threading.Thread(target=serve_slm, args=(slm, stop, SlmEngine(tiny_model, threads=1)),
                                daemon=True),
               threading.Thread(target=serve_llm, args=(llm, stop), daemon=True)]
    for worker in workers:
        worker.start()
    pipeline.start("sink", "router")
    try:
        record = run_workload(pipeline, broker, 300, FAULT, seed=7)
        reader = pipeline.reader()
        slm_ids = {r[0] for r in reader.query(
            "SELECT query_id FROM pointsman.results FINAL WHERE route = 'slm'")[1]}
        llm_ids = {r[0] for r in reader.query(
            "SELECT query_id FROM pointsman.results FINAL WHERE route IN ('llm', 'escalated')")[1]}
        assert slm_ids and llm_ids  # both tracks took live traffic
        # let the last shadows finish (or fail) before counting them
        judged = pipeline.wait_until("SELECT count() FROM pointsman.evaluations FINAL",
                                     len(slm_ids), timeout=60)
        evaluated = {r[0] for r in reader.query(
            "SELECT query_id FROM pointsman.evaluations FINAL")[1]}
        record.update(shadows_sent=len(slm_ids), shadows_judged=judged)
        print(f"shadow fault row: {record}")
        assert_invariant(record)
        assert record["duplicate_inserts"] == 0, record  # no shadow became a second result
        assert evaluated <= slm_ids  # judged rows only for what the SLM served
        # shadows fail with the upstream (four attempts at 30%, and the breaker opening for live
        # and shadow calls alike drops more): most are judged, never none
        assert judged >= 0.6 * len(slm_ids), record
        # failed shadows leave no letter: every failure letter is a live query's error result (an
        # LLM call's, or a coalesced copy's that shared the failed call)
        letter_ids = {r[0] for r in reader.query(
            "SELECT query_id FROM pointsman.dead_letters FINAL WHERE query_id != ''")[1]}
        error_ids = {r[0] for r in reader.query(
            "SELECT query_id FROM pointsman.results FINAL WHERE error != '' "
            "AND route IN ('llm', 'escalated', 'coalesced')")[1]}
        assert letter_ids <= error_ids, letter_ids - error_ids
        assert not reader.query("SELECT query_id FROM pointsman.results FINAL "
                                "WHERE route = 'slm' AND error != ''")[1]
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
