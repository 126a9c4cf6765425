"""Idempotent topic creation against a real broker."""

from __future__ import annotations

import contextlib
import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from topics.errors import InfraError
from topics.names import TopicSpec

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, specs: list[TopicSpec], *, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet, each with its replication factor and
    min.insync.replicas; return the names created. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise InfraError(f"Kafka at {bootstrap} did not answer: {exc}") from None
    for spec in specs:
        found = metadata.topics.get(spec.name)
        replicas = {len(p.replicas) for p in found.partitions.values()} if found else set()
        if replicas and min(replicas) < spec.replication_factor:
            log.warning("topic %s exists with %d replicas, fewer than the %d configured; "
                        "Kafka does not change it on its own", spec.name, min(replicas),
                        spec.replication_factor)
    missing = [s for s in specs if s.name not in metadata.topics]
    if not missing:
        return []
    # Checked here, not left to the broker: its INVALID_REPLICATION_FACTOR names neither the
    # setting nor how many brokers it saw. Only live brokers count, as they do for Kafka.
    brokers = len(metadata.brokers)
    wanted = max(s.replication_factor for s in missing)
    if wanted > brokers:
        raise InfraError(
            f"replication factor {wanted} needs at least {wanted} brokers, but the Kafka cluster "
            f"at {bootstrap} has {brokers} available; lower POINTSMAN_REPLICATION_FACTOR (and "
            f"POINTSMAN_MIN_INSYNC_REPLICAS) or start more brokers"
        )
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                  config=s.topic_config) for s in missing],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        # exception(), not result(): a raised error would keep this frame and the admin client
        # alive in a cycle through the future until the GC runs
        exc = future.exception(timeout)
        if exc is None:
            created.append(name)
        elif not (isinstance(exc, KafkaException) and
                  exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):  # lost a race: fine
            raise InfraError(f"could not create topic {name}: {exc}")
    _wait_until_led(admin, missing, timeout)
    return created


def _wait_until_led(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """On a cluster the controller acknowledges a creation before every broker has the new
    metadata: wait until the topics show with a leader for each partition, so a client started
    right after never meets an unknown topic. Bounded: past the timeout, clients retry anyway."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KafkaException):
            topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
            if all(_led(topics.get(s.name), s.partitions) for s in specs):
                return
        time.sleep(0.1)
    log.warning("topics %s not yet led on every partition after %.0f s",
                ", ".join(s.name for s in specs), timeout)


def _led(topic: TopicMetadata | None, partitions: int) -> bool:
    if topic is None or topic.error is not None or len(topic.partitions) < partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())
