"""Topic names and configs: the wiring between stages."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    """Every topic name, with an optional prefix so several pipelines can share a broker."""

    prefix: str = ""

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
    def results(self) -> str:
        return f"{self.prefix}results"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    def route(self, track: str) -> str:
        return self.route_slm if track == "slm" else self.route_llm

    def specs(self, partitions: int = 6) -> list[TopicSpec]:
        week = {"retention.ms": str(7 * DAY_MS), "compression.type": "producer"}
        return [
            TopicSpec(self.queries, partitions, week),
            TopicSpec(self.backfill, partitions, week),
            TopicSpec(self.route_slm, partitions, week),
            TopicSpec(self.route_llm, partitions, week),
            # the router rebuilds its caches from results, so keep them for the cache TTL and more
            TopicSpec(self.results, partitions, week),
            TopicSpec(self.deadletter, partitions, {"retention.ms": str(30 * DAY_MS)}),
        ]
