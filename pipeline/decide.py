"""The router's decisions for a batch of raw messages: pure, no Kafka, no Faust.

validate -> fingerprint -> exact cache -> policy. Duplicates still in flight are sent on with
the same key (their fingerprint), so they land on the same worker partition, and the worker
answers them all with one inference (see workers/coalesce.py): coalescing survives restarts
because it needs no state outside Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.kafka_io import Outgoing
from pipeline.exact_cache import CachedAnswer, ExactCache
from pipeline.fingerprint import fingerprint
from pipeline.policy import Policy
from pipeline.validate import Limits, validate
from topics.codec import encode, raw_text
from topics.errors import InvalidMessage
from topics.names import Topics
from topics.schemas import DeadLetter, Result, RouteRequest, Timings

CACHEABLE_ROUTES = frozenset({"slm", "llm", "escalated"})


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka message time, epoch seconds
    key: bytes | None
    value: bytes | None


class RouterCore:
    def __init__(
        self, topics: Topics, policy: Policy, cache: ExactCache, limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.topics = topics
        self.policy = policy
        self.cache = cache
        self.limits = limits or Limits()

    def route_batch(self, batch: list[Incoming], picked_at: float) -> list[Outgoing]:
        return [self.route_one(message, picked_at) for message in batch]

    def route_one(self, message: Incoming, picked_at: float) -> Outgoing:
        origin = f"{message.topic}:{message.partition}:{message.offset}"
        try:
            query = validate(
                message.value, origin=origin, timestamp=message.timestamp, limits=self.limits
            )
        except InvalidMessage as exc:
            return self._dead_letter(message, exc.reason, origin)
        query_id = query.id or origin
        submitted_at = query.submitted_at or message.timestamp
        fp = fingerprint(query)
        now = self.clock()
        timings = Timings(
            queued_ms=max(0.0, (picked_at - submitted_at) * 1000),
            routed_ms=max(0.0, (now - picked_at) * 1000),
        )
        hit = self.cache.get(fp, now)
        if hit is not None:
            timings.total_ms = max(0.0, (now - submitted_at) * 1000)
            result = Result(
                query_id=query_id, tenant=query.tenant, route="cache", answer=hit.answer,
                model=hit.model, fingerprint=fp, route_reason=f"exact cache: {hit.source_query_id}",
                submitted_at=submitted_at, completed_at=now, timings=timings,
            )
            return Outgoing(self.topics.results, query_id.encode(), encode(result))
        decision = self.policy.decide(query)
        request = RouteRequest(
            query=query, query_id=query_id, fingerprint=fp, track=decision.track,
            reason=decision.reason, submitted_at=submitted_at, routed_at=now, timings=timings,
        )
        return Outgoing(self.topics.route(decision.track), fp.encode(), encode(request))

    def learn(self, result: Result) -> None:
        """Fill the exact cache from the results stream (every router sees every result)."""
        if result.route in CACHEABLE_ROUTES and result.error is None and result.fingerprint:
            self.cache.put(
                result.fingerprint,
                CachedAnswer(result.answer, result.model, result.query_id, result.completed_at),
            )

    def _dead_letter(self, message: Incoming, reason: str, origin: str) -> Outgoing:
        letter = DeadLetter(
            reason=reason, raw=raw_text(message.value), source_topic=message.topic,
            partition=message.partition, offset=message.offset,
            key=raw_text(message.key) if message.key is not None else None, failed_at=self.clock(),
        )
        return Outgoing(self.topics.deadletter, origin.encode(), encode(letter))
