"""Fault suite: the invariant under each fault. Every valid query id ends with exactly one row
in pointsman.results, every malformed message one dead letter, nothing lost, nothing stuck.
The short versions run in CI; `slow` ones (POINTSMAN_SLOW=1) run bigger workloads."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from infra import kafka
from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.integration.workload import make_workload
from tests.reliability.conftest import outcome
from workers.llm_standin import Faults, StandinLLM, StandinServer

pytestmark = pytest.mark.integration

FAULTS = {
    "healthy upstream": Faults(),
    "30% failing upstream (429, 500, hang, slow)": Faults(
        rate_limited=0.10, server_error=0.10, hang=0.05, slow=0.05, slow_s=0.8, seed=7),
}


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini")).start()
    yield server
    server.stop()


def llm_only(pipeline: Pipeline, base_url: str, **extra: str) -> None:
    settings = {"POINTSMAN_ROUTING_POLICY": "always-llm", "POINTSMAN_LLM_BASE_URL": base_url,
                "POINTSMAN_LLM_TIMEOUT_S": "1.0", "POINTSMAN_LLM_RETRIES": "3"}
    pipeline.env.update({**settings, **extra})


def assert_invariant(record: dict) -> None:
    assert record["lost"] == 0 and record["unexpected"] == 0, record
    assert record["duplicated_rows_after_dedup"] == 0, record
    assert record["dead_lettered"] == record["malformed"], record
    # each failed answer is kept as a dead letter (a replay may add letters for failures that a
    # later retry turned into answers: the letters stay, as a record of what happened)
    assert record["errors_without_dead_letter"] == 0, record


def run_workload(pipeline: Pipeline, broker: str, size: int, fault: str, seed: int = 0) -> dict:
    """Warm up (one query through every started role), then send the workload at once."""
    send(pipeline, broker, [b'{"id": "warm-up", "text": "ready?", "max_tokens": 4}'])
    assert pipeline.wait_until(RESULTS, 1, timeout=120) == 1
    work = make_workload(size, seed=seed, run=f"f{seed}")
    work.valid_ids.add("warm-up")
    send(pipeline, broker, work.lines)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=300) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=60) >= work.malformed
    return outcome(pipeline, fault, len(work.lines), work.valid_ids, work.malformed)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_upstream_faults(pipeline: Pipeline, broker: str, upstream: StandinServer, fault: str) -> None:
    upstream.llm.faults = FAULTS[fault]
    llm_only(pipeline, upstream.base_url)
    pipeline.start("sink", "router", "llm")
    record = run_workload(pipeline, broker, 300, fault)
    assert_invariant(record)
    share_ok = record["answered_ok"] / record["valid"]
    # with 4 attempts at 30% failure, ~0.8% should fail for good; allow noise, never silence
    assert share_ok >= (0.999 if fault == "healthy upstream" else 0.95), record


def test_failover_to_secondary_upstream(pipeline: Pipeline, broker: str, tmp_path) -> None:
    primary = StandinServer(StandinLLM(model="primary", faults=Faults(server_error=1.0))).start()
    secondary = StandinServer(StandinLLM(model="gpt-4o-mini")).start()
    try:
        upstreams = tmp_path / "upstreams.toml"
        upstreams.write_text(
            f'[[upstream]]\nname = "primary"\nbase_url = "{primary.base_url}"\nmodel = "p"\n'
            f'api_key_env = "TEST_PRIMARY_KEY"\n\n'
            f'[[upstream]]\nname = "secondary"\nbase_url = "{secondary.base_url}"\nmodel = "s"\n')
        pipeline.env.update(POINTSMAN_ROUTING_POLICY="always-llm", TEST_PRIMARY_KEY="sk-never-log",
                            POINTSMAN_LLM_UPSTREAMS_FILE=str(upstreams))
        pipeline.start("sink", "router", "llm")
        record = run_workload(pipeline, broker, 200, "primary upstream down (fallback)")
        assert_invariant(record)
        assert record["errors"] == 0
        # the open circuit spares the dead primary: it saw far fewer calls than there were queries
        assert primary.llm.calls < record["valid"] / 2 and secondary.llm.calls > 0
        logs = "".join(p.read_text(errors="replace") for p in pipeline.logs.iterdir())
        assert "sk-never-log" not in logs
    finally:
        primary.stop()
        secondary.stop()


def test_slow_upstream_applies_backpressure(pipeline: Pipeline, broker: str, upstream: StandinServer) -> None:
    upstream.llm.faults = Faults(slow=1.0, slow_s=0.3)
    llm_only(pipeline, upstream.base_url, POINTSMAN_LLM_CONCURRENCY="4", POINTSMAN_LLM_TIMEOUT_S="5")
    pipeline.start("sink", "router", "llm")
    record = run_workload(pipeline, broker, 120, "slow upstream (back-pressure)")
    assert_invariant(record)
    assert upstream.llm.peak_in_flight <= 4  # bounded: the rest waited in Kafka


def test_broker_restart_mid_run(pipeline: Pipeline, broker: str,
                                broker_config: kafka.LocalKafkaConfig) -> None:
    work = make_workload(1000, seed=5, run="br", long_every=4)
    pipeline.start("sink", "router", "slm", "llm")
    send(pipeline, broker, work.lines)
    progress = pipeline.wait_until(RESULTS, len(work.valid_ids) // 5, timeout=120)
    assert progress < len(work.valid_ids)
    kafka.stop(broker_config)
    time.sleep(3)
    kafka.start(broker_config)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=300) == len(work.valid_ids)
    record = outcome(pipeline, "broker restart mid-run", len(work.lines), work.valid_ids,
                     work.malformed)
    assert_invariant(record)


@pytest.mark.slow
def test_soak_every_role_killed_in_turn_under_a_failing_upstream(
        pipeline: Pipeline, broker: str, upstream: StandinServer) -> None:
    """The long version (POINTSMAN_SLOW=1): 5,000 queries, 30% failing upstream, and each role
    SIGKILLed and restarted in turn while they flow."""
    upstream.llm.faults = FAULTS["30% failing upstream (429, 500, hang, slow)"]
    llm_only(pipeline, upstream.base_url)
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "baseline-length"
    pipeline.start("sink", "router", "slm", "llm")
    work = make_workload(5000, seed=9, run="soak", long_every=3)
    send(pipeline, broker, work.lines)
    for i, role in enumerate(["router", "slm", "llm", "sink"]):
        pipeline.wait_until(RESULTS, len(work.valid_ids) * (i + 1) // 6, timeout=600)
        pipeline.kill(role)
        pipeline.start(role)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=900) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=60) >= work.malformed
    assert_invariant(outcome(pipeline, "soak: kill -9 each role + 30% failing upstream",
                             len(work.lines), work.valid_ids, work.malformed))
