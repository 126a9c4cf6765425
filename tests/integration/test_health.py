"""The container healthcheck (pipeline/health.py) against the real broker: healthy while this host
has a member in the role's consumer group, unhealthy once the member leaves, when the member is
another host's, and when the broker cannot be reached."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import Config
from pipeline.health import local_addresses, main, problem

pytestmark = pytest.mark.integration


@pytest.fixture()
def config(broker: str) -> Config:
    return Config(bootstrap=broker, topic_prefix=f"health-{uuid.uuid4().hex[:8]}-")


@pytest.fixture()
def member(config: Config) -> Iterator[Consumer]:
    """A consumer in the sink's group that has joined it (it holds an assignment)."""
    topic = f"{config.topic_prefix}results"
    admin = AdminClient({"bootstrap.servers": config.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": config.bootstrap, "group.id": config.group("sink")})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment():
        assert time.monotonic() < deadline, "the consumer never joined its group"
        consumer.poll(0.2)
    yield consumer
    with contextlib.suppress(RuntimeError):  # a test may have closed it already
        consumer.close()


def test_a_joined_member_on_this_host_is_healthy(config: Config, member: Consumer) -> None:
    assert problem("sink", config) is None
    # another role's group has no member: that role is down
    assert "no member of group" in (problem("slm", config) or "")


def test_a_member_on_another_host_does_not_make_this_one_healthy(config: Config, member: Consumer) -> None:
    why = problem("sink", config, addresses={"10.254.254.254"})
    assert why is not None and "no member" in why
    assert any(address in why for address in local_addresses())  # it says where the member is


def test_a_member_that_left_is_unhealthy(config: Config, member: Consumer) -> None:
    member.close()  # leaves the group at once, as a role that exits does
    why = problem("sink", config)
    assert why is not None and "members at: none" in why


def test_an_unreachable_broker_is_unhealthy_and_main_says_so(
        config: Config, member: Consumer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POINTSMAN_KAFKA_BOOTSTRAP", config.bootstrap)
    monkeypatch.setenv("POINTSMAN_TOPIC_PREFIX", config.topic_prefix)
    assert main(["sink"]) == 0
    assert capsys.readouterr().out.startswith("healthy")
    monkeypatch.setenv("POINTSMAN_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens there
    assert main(["sink"]) == 1
    assert "cannot describe group" in capsys.readouterr().out
    assert main(["nope"]) == 2
