"""Topic names and configs: the wiring between stages."""

from __future__ import annotations

from dataclasses import dataclass

from topics.errors import ConfigError

DAY_MS = 24 * 3600 * 1000


def check_replication(replication_factor: int, min_insync_replicas: int) -> None:
    """min ISR above the factor would refuse every acks=all write: a setup error, said early."""
    if replication_factor < 1 or min_insync_replicas < 1:
        raise ConfigError(f"replication factor ({replication_factor}) and min.insync.replicas "
                          f"({min_insync_replicas}) must be at least 1")
    if min_insync_replicas > replication_factor:
        raise ConfigError(f"min.insync.replicas ({min_insync_replicas}) exceeds the replication "
                          f"factor ({replication_factor}): no write could ever be acknowledged")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1
    min_insync_replicas: int = 1  # created as the topic's min.insync.replicas

    def __post_init__(self) -> None:
        check_replication(self.replication_factor, self.min_insync_replicas)

    @property
    def topic_config(self) -> dict[str, str]:
        """The config the topic is created with, min.insync.replicas included."""
        return {**self.config, "min.insync.replicas": str(self.min_insync_replicas)}


@dataclass(frozen=True)
class Topics:
    """Every topic name, with an optional prefix so several pipelines can share a broker, and
    the replication every topic is created with (the defaults suit one local broker)."""

    prefix: str = ""
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def __post_init__(self) -> None:
        check_replication(self.replication_factor, self.min_insync_replicas)

    @property
    def queries(self) -> str:
        return f"{self.prefix}queries"

    @property
    def backfill(self) -> str:
        return f"{self.prefix}queries.backfill"

    @property
    def route_slm(self) -> str:
        return f"{self.prefix}route.slm"

    @property
    def route_llm(self) -> str:
        return f"{self.prefix}route.llm"

    @property
    def route_slm_backfill(self) -> str:
        """Backfill-lane requests for the SLM track: workers take them in the room live leaves."""
        return f"{self.prefix}route.slm.backfill"

    @property
    def route_llm_backfill(self) -> str:
        return f"{self.prefix}route.llm.backfill"

    @property
    def jobs(self) -> str:
        """Backfill jobs' state, keyed by job name (compacted: the latest state of each)."""
        return f"{self.prefix}jobs"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def route_shadow(self) -> str:
        """Shadow requests (topics/shadow.py): the LLM track's lowest-priority lane."""
        return f"{self.prefix}route.shadow"

    @property
    def evaluations(self) -> str:
        return f"{self.prefix}evaluations"

    def route(self, track: str, lane: str = "live") -> str:
        if lane == "backfill":
            return self.route_slm_backfill if track == "slm" else self.route_llm_backfill
        return self.route_slm if track == "slm" else self.route_llm

    def lane_of(self, topic: str) -> str:
        """The lane a route topic carries."""
        return "backfill" if topic in (self.route_slm_backfill, self.route_llm_backfill) else "live"

    def specs(self, partitions: int = 6) -> list[TopicSpec]:
        week = {"retention.ms": str(7 * DAY_MS), "compression.type": "producer"}
        month = {"retention.ms": str(30 * DAY_MS)}
        # the router rebuilds its caches from results, so keep them for the cache TTL and more
        configs = [(self.queries, week), (self.backfill, week), (self.route_slm, week),
                   (self.route_llm, week), (self.results, week), (self.deadletter, month),
                   (self.route_shadow, week), (self.evaluations, month),
                   (self.route_slm_backfill, week), (self.route_llm_backfill, week),
                   (self.jobs, {"cleanup.policy": "compact", "retention.ms": "-1"})]
        return [TopicSpec(name, partitions, config, self.replication_factor,
                          self.min_insync_replicas) for name, config in configs]
