"""Fault suite beyond one machine: a local three-broker KRaft cluster (the same jars, three JVMs,
every topic with 3 replicas and min ISR 2, the internal topics too). The broker leading the most
partitions of the busy topics is SIGKILLed mid-run; the invariant must hold all the same: every
valid query id exactly one row, every malformed line one dead letter, nothing lost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka_cluster import LocalKafkaCluster
from pipeline.config import Config
from pipeline.roles import ROLES
from tests.harness import Pipeline, pipeline_env
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.integration.workload import make_workload
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant
from topics.admin import ensure_topics
from topics.names import Topics
from workers.llm_standin import StandinLLM, StandinServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPLICATION, MIN_ISR = 3, 2


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    nodes = LocalKafkaCluster.create(tmp_path / "cluster", size=3)
    try:
        nodes.start()
        yield nodes
    finally:  # also when start or the test failed: never leave a JVM behind
        nodes.stop(timeout=15)


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini")).start()
    yield server
    server.stop()


@pytest.fixture()
def cluster_pipeline(cluster: LocalKafkaCluster, tiny_model: Path, upstream: StandinServer,
                     tmp_path: Path) -> Iterator[Pipeline]:
    """The `pipeline` fixture of tests/conftest.py, pointed at every broker of the cluster."""
    prefix = f"c{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix, REPLICATION, MIN_ISR)
    ensure_topics(cluster.bootstrap, topics.specs(partitions=3))
    env = pipeline_env(cluster.bootstrap, prefix, tmp_path, tiny_model,
                       POINTSMAN_REPLICATION_FACTOR=str(REPLICATION),
                       POINTSMAN_MIN_INSYNC_REPLICAS=str(MIN_ISR),
                       POINTSMAN_LLM_BASE_URL=upstream.base_url)
    running = Pipeline.for_test(env, topics, tmp_path)
    yield running
    running.close()


def test_leader_sigkill_mid_run(cluster: LocalKafkaCluster, cluster_pipeline: Pipeline) -> None:
    pipeline, topics = cluster_pipeline, cluster_pipeline.topics
    busy = [topics.queries, topics.route_slm, topics.route_llm, topics.results]
    work = make_workload(800, seed=13, run="cl", long_every=4)
    pipeline.start("sink", "router", "slm", "llm")
    send(pipeline, cluster.bootstrap, work.lines)
    progress = pipeline.wait_until(RESULTS, len(work.valid_ids) * 3 // 10, timeout=180)
    assert progress < len(work.valid_ids), "the run finished before the broker could be killed"

    groups = [Config.from_env(pipeline.env).group(role) for role in ROLES]
    leaders, coordinators = cluster.leader_counts(busy), cluster.coordinators(groups)
    victim = cluster.busiest_leader(busy, groups)
    cluster.kill(victim)  # SIGKILL: no controlled shutdown, leadership moves only by election

    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=300) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=60) >= work.malformed
    record = outcome(pipeline, "3-broker cluster: leader SIGKILL mid-run", len(work.lines),
                     work.valid_ids, work.malformed)
    orphaned = sorted(g.removeprefix(topics.prefix) for g, b in coordinators.items() if b == victim)
    record.update(killed_broker=victim, killed_led=leaders[victim],
                  busy_partitions=sum(leaders.values()), killed_coordinating=orphaned,
                  killed_at_answered=progress)
    print(f"\nkilled broker {victim} (led {leaders[victim]} of {sum(leaders.values())} busy "
          f"partitions, coordinated {orphaned or 'no group'}) at {progress} answered; raw "
          f"duplicate inserts before FINAL: {record['duplicate_inserts']}; {record}")
    assert_invariant(record)
    # the survivors took over every partition the dead broker led
    after = cluster.leader_counts(busy)
    assert victim not in after and sum(after.values()) == sum(leaders.values()), after
