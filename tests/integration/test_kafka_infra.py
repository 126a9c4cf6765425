"""The local Kafka broker manager (infra/kafka.py) and the local cluster (infra/kafka_cluster.py)
against real brokers.

Uses a tmp home and free ports so it never touches a developer's broker on 9092 (nor another
test run's broker on the same machine); the jar cache is the real one (first run resolves the
jars with Maven, later runs reuse them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from infra import kafka
from infra.kafka import LocalKafkaConfig
from infra.kafka_cluster import LocalKafkaCluster
from tests.harness import free_port_pair
from topics.admin import ensure_topics
from topics.errors import InfraError
from topics.names import TopicSpec

pytestmark = pytest.mark.integration
T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_reason() -> str | None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "needs java 17+"
    cfg = LocalKafkaConfig(home=Path("unused"))
    cached = (cfg.cache_dir / cfg.version / "libs" / f"kafka_2.13-{cfg.version}.jar").is_file()
    if not cached and shutil.which("mvn") is None:
        return "needs mvn (or cached Kafka jars)"
    return None


needs_toolchain = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafkaConfig]:
    port = free_port_pair()
    cfg = LocalKafkaConfig(home=tmp_path / "kafka", port=port, controller_port=port + 1)
    yield cfg
    # Teardown runs even when the test failed: never leave a JVM behind.
    kafka.stop(cfg, timeout=15)


def _consume_one(cfg: LocalKafkaConfig, topic: str, timeout: float = 30) -> Message:
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.bootstrap,
            "group.id": f"infra-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    # assign(), not subscribe(): reading from offset 0 needs no group rebalance.
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise AssertionError(f"consume error: {msg.error()}")
            return msg
        raise AssertionError(f"no message on {topic} within {timeout}s")
    finally:
        consumer.close()


@needs_toolchain
def test_lifecycle_is_idempotent_and_data_survives_restart(broker: LocalKafkaConfig) -> None:
    cfg = broker
    # Two racing starts (the lock serialises them) must end with one broker.
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: kafka.start(cfg, timeout=90), range(2))
    assert first.running and second.running
    assert first.pid is not None and first.pid == second.pid
    st = kafka.status(cfg)
    assert st.running and st.pid == first.pid and st.bootstrap == f"127.0.0.1:{cfg.port}"
    assert kafka.start(cfg).pid == first.pid  # already running: a no-op

    topic = f"infra-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cfg.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": cfg.bootstrap, "acks": "all"})
    producer.produce(
        topic, key=b"k", value=b"hello pointsman", on_delivery=lambda e, _m: e and errors.append(e)
    )
    assert producer.flush(30) == 0 and errors == []

    assert kafka.stop(cfg) is True
    st = kafka.status(cfg)
    assert not st.running and st.pid is None
    assert not (cfg.home / "kafka.pid").exists()
    assert kafka.stop(cfg) is False  # stopping a stopped broker is a no-op too

    restarted = kafka.start(cfg)
    assert restarted.running and restarted.pid != first.pid
    msg = _consume_one(cfg, topic)
    assert (msg.key(), msg.value()) == (b"k", b"hello pointsman")
    assert kafka.stop(cfg) is True
    assert not kafka.status(cfg).running


def _assert_nothing_started(cfg: LocalKafkaConfig) -> None:
    assert not (cfg.home / "kafka.pid").exists()
    assert not (cfg.home / "data" / "meta.properties").exists()
    st = kafka.status(cfg)
    assert not st.running and st.pid is None


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    cfg = LocalKafkaConfig(
        home=tmp_path / "kafka",
        port=_free_port(),
        controller_port=_free_port(),
        cache_dir=tmp_path / "cache",
    )
    with pytest.raises(InfraError, match="`java` not found"):
        kafka.start(cfg)
    _assert_nothing_started(cfg)
    with pytest.raises(InfraError, match="`java` not found"):
        kafka.ensure_jars(cfg)
    assert not list((tmp_path / "cache").rglob("*.jar"))


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_missing_mvn_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java_home = Path(shutil.which("java") or "").resolve().parents[1]
    monkeypatch.setenv("JAVA_HOME", str(java_home))  # java found via JAVA_HOME, mvn nowhere
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    cfg = LocalKafkaConfig(home=tmp_path / "kafka", cache_dir=tmp_path / "cache")
    with pytest.raises(InfraError, match="`mvn` not found"):
        kafka.ensure_jars(cfg)


def test_port_taken_by_another_process_is_detected(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = LocalKafkaConfig(home=tmp_path / "kafka", port=port, controller_port=_free_port())
        with pytest.raises(InfraError, match=f"port {port} .* already in use"):
            kafka.start(cfg)
        _assert_nothing_started(cfg)
        assert "answered by another process" in kafka.status(cfg).detail


def test_cli_status_of_a_stopped_broker(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "infra.kafka", "status", "--home", str(tmp_path), "--port"]
    r = subprocess.run(
        [*cmd, str(_free_port())], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 3, r.stderr  # LSB: not running
    assert r.stdout.startswith("not running")


def _deliver(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value, key=value, on_delivery=lambda e, _m: e and errors.append(e))
    assert producer.flush(60) == 0 and errors == []


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int,
                 timeout: float = 60) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"infra-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                seen.append(msg.value())
        return seen
    finally:
        consumer.close()


def _eventually(check: Callable[[], T], timeout: float = 30) -> T:
    """check() once it passes: the brokers of a cluster learn of a new topic one by one, and a
    request may reach one that has not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (KafkaException, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Each helper makes its own short-lived AdminClient: librdkafka 2.16 can abort the process
# (rd_kafka_enq_once_del_source_return: `eonce->refcnt > 0`) when a broker that an admin
# handle still tracks is SIGKILLed, so no handle is held across a kill.
def _rdkafka_handles() -> int:
    """librdkafka clients alive in this process (each runs one rdk:main thread); -1 without /proc."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return -1
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir() if (t / "comm").exists()]
    return names.count("rdk:main")


def _brokers(bootstrap: str) -> list[int]:
    return sorted(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers)


def _replication(bootstrap: str, topic: str) -> tuple[set[int], set[int], str]:
    """Replica counts of the topic's and of __consumer_offsets' partitions; the topic's min ISR."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=10).topics
    replicas = {len(p.replicas) for p in topics[topic].partitions.values()}
    offsets = {len(p.replicas) for p in topics["__consumer_offsets"].partitions.values()}
    configs = admin.describe_configs([ConfigResource("topic", topic)])
    min_isr = next(iter(configs.values())).result(30)["min.insync.replicas"].value
    return replicas, offsets, min_isr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    nodes = LocalKafkaCluster.create(tmp_path / "cluster", size=3)
    yield nodes
    nodes.stop(timeout=15)  # also when the test failed: never leave a JVM behind


@needs_toolchain
def test_three_node_cluster_survives_its_leader_sigkill(cluster: LocalKafkaCluster) -> None:
    clients = _rdkafka_handles()
    cluster.start()
    assert cluster.running() == [1, 2, 3]
    # the readiness probes leave no client behind (a leaked one, still connected, can take the
    # whole process down inside librdkafka when a broker is killed)
    assert _rdkafka_handles() == clients
    assert _brokers(cluster.bootstrap) == [1, 2, 3]
    # every node one voter of a single three-node quorum, in one cluster
    props = [(n.home / "server.properties").read_text() for n in cluster.nodes]
    assert all(f"controller.quorum.voters={cluster.nodes[0].voters}" in p for p in props)
    assert len(cluster.nodes[0].voters.split(",")) == 3
    metas = {(n.home / "data" / "meta.properties").read_text().split("cluster.id=")[1].split()[0]
             for n in cluster.nodes}
    assert len(metas) == 1

    topic = f"infra-rf3-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(cluster.bootstrap, [TopicSpec(topic, 3, {}, 3, 2)]) == [topic]
    # the internal topics are replicated too (the readiness probe made __consumer_offsets)
    assert _eventually(lambda: _replication(cluster.bootstrap, topic)) == ({3}, {3}, "2")

    _deliver(cluster.bootstrap, topic, [f"before-{i}".encode() for i in range(100)])
    victim = cluster.busiest_leader([topic])
    assert cluster.leader_counts([topic])[victim] >= 1
    cluster.kill(victim)
    assert victim not in cluster.running() and len(cluster.running()) == 2
    # two of three in sync still meet min ISR 2: writes with acks=all go on, nothing acked is lost
    _deliver(cluster.bootstrap, topic, [f"after-{i}".encode() for i in range(100)])
    assert victim not in cluster.leader_counts([topic])
    seen = _consume_all(cluster.bootstrap, topic, 3, 200)
    assert sorted(seen) == sorted([f"before-{i}".encode() for i in range(100)] +
                                  [f"after-{i}".encode() for i in range(100)])

    cluster.restart(victim)
    assert cluster.running() == [1, 2, 3]
    assert _brokers(cluster.bootstrap) == [1, 2, 3]
    cluster.stop()
    assert cluster.running() == []
    assert not any((n.home / "kafka.pid").exists() for n in cluster.nodes)


@needs_toolchain
def test_replication_beyond_the_brokers_is_a_clear_error(broker: LocalKafkaConfig) -> None:
    kafka.start(broker)
    topic = f"infra-rf3-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InfraError, match=r"replication factor 3 needs at least 3 brokers.*has 1"):
        ensure_topics(broker.bootstrap, [TopicSpec(topic, 1, {}, 3, 2)])
    assert topic not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(
        timeout=10).topics
    # the defaults suit this single broker
    assert ensure_topics(broker.bootstrap, [TopicSpec(topic, 1, {})]) == [topic]


@needs_toolchain
def test_a_bench_broker_is_stopped_after_only_if_it_was_started_for_it(broker: LocalKafkaConfig) -> None:
    with kafka.started(broker) as running:
        assert running.running and kafka.status(broker).running
    assert not kafka.status(broker).running  # started for the job: gone after it
    kafka.start(broker)
    with kafka.started(broker):
        pass
    assert kafka.status(broker).running  # someone's broker, running before: left running
