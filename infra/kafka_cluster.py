"""A local N-node Apache Kafka cluster (KRaft) for the fault suite: each node a combined
broker+controller in its own JVM, home and ports (the single-node code of infra/kafka.py, the
same jars), all voters of one controller quorum, the internal topics replicated like the user's.

    cluster = LocalKafkaCluster.create(home, size=3)   # replication 3, min ISR 2
    cluster.start(); cluster.kill(cluster.busiest_leader(topics)); cluster.restart(2)
    cluster.stop()
"""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra import kafka
from infra.kafka import LocalKafkaConfig
from topics.errors import ConfigError, InfraError


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (held open together, so never the same twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _cluster_id(home: Path) -> str:
    """One id for every node, kept in home: a node formatted later must join the same cluster."""
    path = home / "cluster.id"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(kafka.new_cluster_id() + "\n")
    return path.read_text().strip()


@dataclass(frozen=True)
class LocalKafkaCluster:
    nodes: tuple[LocalKafkaConfig, ...]  # node ids 1..N, in order

    @classmethod
    def create(cls, home: Path, *, size: int = 3, replication: int | None = None,
               min_isr: int | None = None, heap: str = "512m",
               ports: list[int] | None = None) -> LocalKafkaCluster:
        """Nodes home/node1..N on free ports (or `ports`: N broker ports, then N controller
        ports). Internal topics default to `size` replicas, min ISR one less: any one broker
        may die without a write being refused."""
        if size < 1:
            raise ConfigError(f"a cluster needs at least one node, not {size}")
        replication = size if replication is None else replication
        min_isr = max(1, replication - 1) if min_isr is None else min_isr
        if replication > size:
            raise ConfigError(f"replication {replication} needs {replication} nodes, not {size}")
        ports = ports or free_ports(2 * size)
        if len(ports) != 2 * size:
            raise ConfigError(f"{size} nodes need {2 * size} ports, got {len(ports)}")
        home = Path(home).expanduser().resolve()
        cid = _cluster_id(home)
        ids = range(1, size + 1)
        voters = ",".join(f"{i}@127.0.0.1:{ports[size + i - 1]}" for i in ids)
        return cls(tuple(
            LocalKafkaConfig(home=home / f"node{i}", port=ports[i - 1],
                             controller_port=ports[size + i - 1], heap=heap, node_id=i,
                             voters=voters, replication=replication, min_isr=min_isr,
                             cluster_id=cid)
            for i in ids))

    @property
    def bootstrap(self) -> str:
        """Every broker: a client that finds one dead asks the next."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafkaConfig:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ConfigError(f"no node {node_id} in this cluster (1..{len(self.nodes)})")

    def start(self, *, timeout: float = 150) -> None:
        """Start every node not running and wait until all serve clients. Idempotent; a failed
        start stops the whole cluster again."""
        deadline = time.monotonic() + timeout
        try:
            # all at once: no node is ready before a majority of the quorum is up
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                launches = list(pool.map(kafka.launch, self.nodes))
            for node, spawned in zip(self.nodes, launches, strict=True):
                if spawned is not None:
                    kafka.await_launch(node, spawned, deadline, brokers=len(self.nodes))
        except BaseException:
            self.stop(timeout=10)
            raise

    def stop(self, *, timeout: float = 30) -> None:
        """SIGTERM every node at once (SIGKILL after `timeout`): stopped one by one, the last ones
        would wait for a quorum that has already gone."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: kafka.stop(node, timeout=timeout), self.nodes))

    def kill(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> int:
        """Crash one node (SIGKILL by default) and wait until it is gone; its pid."""
        pid = kafka.kill(self.node(node_id), sig)
        if pid is None:
            raise InfraError(f"Kafka node {node_id} is not running")
        return pid

    def restart(self, node_id: int, *, timeout: float = 90) -> None:
        """Start a stopped or killed node again (same ports and data) and wait until it is back."""
        node = self.node(node_id)
        spawned = kafka.launch(node)
        if spawned is not None:
            kafka.await_launch(node, spawned, time.monotonic() + timeout, brokers=len(self.nodes))

    def running(self) -> list[int]:
        return [node.node_id for node in self.nodes if kafka.status(node).running]

    def leader_counts(self, topics: Iterable[str], *, timeout: float = 10) -> Counter[int]:
        """Partitions led by each broker id, over `topics` (leaderless partitions not counted)."""
        topics = list(topics)
        metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        counts: Counter[int] = Counter()
        for name in topics:
            found = metadata.topics.get(name)
            if found is None or found.error is not None:
                raise InfraError(f"topic {name} not found on the cluster at {self.bootstrap}")
            counts.update(p.leader for p in found.partitions.values() if p.leader >= 0)
        return counts

    def coordinators(self, groups: Iterable[str], *, timeout: float = 10) -> dict[str, int]:
        """The broker coordinating each consumer group (its offsets and membership)."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.describe_consumer_groups(list(groups), request_timeout=timeout)
        return {group: future.result(timeout).coordinator.id for group, future in futures.items()}

    def busiest_leader(self, topics: Iterable[str], groups: Iterable[str] = ()) -> int:
        """The broker leading the most partitions of `topics`, the one whose loss hurts most;
        among equals (Kafka spreads leaders evenly) the one coordinating the most of `groups`,
        so its death also moves their offsets and membership; then the lowest id."""
        topics = list(topics)
        counts = self.leader_counts(topics)
        if not counts:
            raise InfraError(f"no partition of {topics} has a leader")
        coordinated = Counter(self.coordinators(groups).values()) if groups else Counter()
        return max(sorted(counts), key=lambda b: (counts[b], coordinated[b]))
