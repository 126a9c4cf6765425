"""Replication settings: from the environment to every topic spec, refused early when impossible."""

from __future__ import annotations

import pytest

from pipeline.config import ENV_DOC, Config
from topics.errors import ConfigError
from topics.names import Topics, TopicSpec


def test_defaults_suit_one_local_broker() -> None:
    specs = Config.from_env({}).topics.specs()
    assert {(s.replication_factor, s.min_insync_replicas) for s in specs} == {(1, 1)}
    assert all(s.topic_config["min.insync.replicas"] == "1" for s in specs)


def test_every_topic_takes_the_configured_replication() -> None:
    env = {"POINTSMAN_REPLICATION_FACTOR": "3", "POINTSMAN_MIN_INSYNC_REPLICAS": "2"}
    specs = Config.from_env(env).topics.specs(partitions=4)
    # queries, backfill, route.slm|llm|shadow, route.slm|llm.backfill, results, deadletter,
    # evaluations, jobs
    assert len(specs) == 11
    assert {(s.replication_factor, s.min_insync_replicas) for s in specs} == {(3, 2)}
    for spec in specs:  # min ISR is a topic config; the topic's own settings stay
        assert spec.topic_config["min.insync.replicas"] == "2"
        assert spec.topic_config["retention.ms"] == spec.config["retention.ms"]
    assert {"POINTSMAN_REPLICATION_FACTOR", "POINTSMAN_MIN_INSYNC_REPLICAS"} <= set(ENV_DOC)


@pytest.mark.parametrize(("factor", "min_isr", "match"), [
    (2, 3, "exceeds the replication factor"),  # every acks=all write would be refused
    (0, 1, "at least 1"),
    (3, 0, "at least 1"),
])
def test_impossible_replication_is_a_config_error(factor: int, min_isr: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Topics("p.", factor, min_isr)
    with pytest.raises(ConfigError, match=match):
        TopicSpec("t", 1, {}, factor, min_isr)
