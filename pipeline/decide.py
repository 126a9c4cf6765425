"""The router's decisions for a batch of raw messages: pure, no Kafka, no Faust.

validate -> fingerprint -> exact cache -> policy. A share (`shadow_rate`) of semantic-cache hits
is also sent to the LLM track as a shadow request, so the LLM worker judges the cached answer
against a fresh one (topics/shadow.py): the cache's precision measured on real traffic.
Duplicates still in flight are sent on with the same key (their fingerprint), so they land on
the same worker partition, and the worker answers them all with one inference (see
workers/coalesce.py): coalescing survives restarts because it needs no state outside Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infra.kafka_io import Outgoing
from pipeline.exact_cache import CachedAnswer, ExactCache
from pipeline.fingerprint import fingerprint
from pipeline.policy import Policy
from pipeline.semantic.cache import Lookup, SemanticCache, SemanticEntry, key_for
from pipeline.validate import Limits, validate
from topics.codec import encode, raw_text
from topics.errors import InvalidMessage
from topics.limits import (
    MAX_MESSAGE_BYTES,
    encode_dead_letter,
    encode_result,
    printable,
    truncate_marked,
)
from topics.names import Topics
from topics.schemas import DeadLetter, Lane, Query, Result, Route, RouteRequest, ShadowOf, Timings
from topics.shadow import shadow_chosen, shadow_request

CACHEABLE_ROUTES = frozenset({"slm", "llm", "escalated"})
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka message time, epoch seconds
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class _Miss:
    """A valid query the exact cache could not answer: the semantic stage and policy decide it."""

    index: int
    query: Query
    query_id: str
    fingerprint: str
    submitted_at: float
    picked_at: float
    timings: Timings
    lane: Lane
    accepted_at: float


class RouterCore:
    """validate -> fingerprint -> exact cache -> semantic cache (batched) -> policy."""

    def __init__(
        self, topics: Topics, policy: Policy, cache: ExactCache, limits: Limits | None = None,
        clock: Callable[[], float] = time.time, semantic: SemanticCache | None = None,
        shadow_rate: float = 0.0, explore_rate: float = 0.0,
    ) -> None:
        self.clock = clock
        self.shadow_rate = shadow_rate
        # exploration: this share of the semantic cache's near misses (Lookup.near) is shadowed
        # too, its candidate judged but never served: the evidence to lower a threshold with
        self.explore_rate = explore_rate
        self.topics = topics
        self.policy = policy
        self.cache = cache
        self.semantic = semantic
        self.limits = limits or Limits()
        # a route request carries its query and a few hundred bytes more: bounded by the query
        self._max_request_bytes = min(MAX_MESSAGE_BYTES, self.limits.max_query_bytes + 64 * 1024)
        # the results feed fills both caches from its own thread: one lock, taken once a batch
        self._caches = threading.Lock()

    def route_batch(self, batch: list[Incoming], picked_at: float) -> list[Outgoing]:
        """One output per message, in order, then the shadow requests of semantic-cache hits. A
        message that fails anywhere (a bad value or a bug it trips) becomes a dead letter with the
        reason; its neighbours are routed as usual."""
        outs: list[Outgoing | None] = []
        misses: list[_Miss] = []
        vectors: np.ndarray | None = None
        with self._caches:
            for i, message in enumerate(batch):
                first: Outgoing | _Miss | None
                try:
                    first = self._first_pass(i, message, picked_at)
                except Exception as exc:
                    first = self._failed(message, exc)
                outs.append(first if isinstance(first, Outgoing) else None)
                if isinstance(first, _Miss):
                    misses.append(first)
            looks: list[Lookup | None] = [None] * len(misses)
            if self.semantic is not None and misses:
                try:
                    keys = [key_for(m.query) for m in misses]
                    vectors = self.semantic.embed(keys)
                    looks = list(self.semantic.lookup_batch(keys, self.clock(), vectors=vectors))
                except Exception:
                    # the semantic cache only saves work: without it the batch is still routed
                    log.exception("semantic cache failed for a batch; routing it without")
                    vectors, looks = None, [None] * len(misses)
        shadows: list[Outgoing] = []
        for j, miss in enumerate(misses):
            vector = None if vectors is None else vectors[j]
            if not miss.query.cache:
                looks[j] = None  # answered afresh: the lookup only served the embedding
            try:
                outs[miss.index] = self._second_pass(miss, looks[j], vector)
            except Exception as exc:
                outs[miss.index] = self._failed(batch[miss.index], exc)
                continue
            shadows += self._cache_shadow(miss, looks[j])
        return [out for out in outs if out is not None] + shadows

    def _cache_shadow(self, miss: _Miss, look: Lookup | None) -> list[Outgoing]:
        """A semantic-cache hit chosen for shadowing, or a near miss chosen for exploration (its
        query routed as usual: the user gets the fresh answer), as a shadow request to the LLM."""
        if look is None:
            return []
        if look.entry is not None:
            entry, route, rate = look.entry, "semantic_cache", self.shadow_rate
        elif look.near is not None:
            entry, route, rate = look.near, "semantic_near_miss", self.explore_rate
        else:
            return []
        if not shadow_chosen(miss.query_id, miss.fingerprint, rate):
            return []
        now = self.clock()
        request = RouteRequest(query=miss.query, query_id=miss.query_id, fingerprint=miss.fingerprint,
                               track="llm", reason="", submitted_at=miss.submitted_at,
                               routed_at=now, timings=Timings())
        served = ShadowOf(route=route, answer=entry.answer, model=entry.model,  # type: ignore[arg-type]
                          similarity=look.similarity, source_query_id=entry.source_query_id)
        value = shadow_request(request, served, routed_at=now)
        if value is None:
            log.warning("shadow of %s not sent: too large for the broker", miss.query_id)
            return []
        return [Outgoing(self.topics.route_shadow, miss.fingerprint.encode(), value)]

    def _failed(self, message: Incoming, exc: Exception) -> Outgoing:
        """One message's failure is its own dead letter, never its batch's."""
        origin = f"{message.topic}:{message.partition}:{message.offset}"
        if isinstance(exc, InvalidMessage):
            return self._dead_letter(message, exc.reason, origin)
        if isinstance(exc, RecursionError):
            return self._dead_letter(message, "nested too deeply to process", origin)
        log.error("routing failed for %s; dead-lettered", origin, exc_info=exc)
        return self._dead_letter(message, f"internal error: {type(exc).__name__}: {exc}", origin)

    def route_one(self, message: Incoming, picked_at: float) -> Outgoing:
        return self.route_batch([message], picked_at)[0]

    def _first_pass(self, index: int, message: Incoming, picked_at: float) -> Outgoing | _Miss | None:
        origin = f"{message.topic}:{message.partition}:{message.offset}"
        now = self.clock()
        query = validate(message.value, origin=origin, timestamp=message.timestamp,
                         limits=self.limits, now=now)
        query_id = query.id or origin
        submitted_at = query.submitted_at or message.timestamp
        lane: Lane = "backfill" if message.topic == self.topics.backfill else "live"
        # a backfill's submitted_at is history: its latencies count from when the job sent it
        accepted_at = message.timestamp if lane == "backfill" else submitted_at
        fp = fingerprint(query)
        timings = Timings(
            queued_ms=max(0.0, (picked_at - accepted_at) * 1000),
            routed_ms=max(0.0, (now - picked_at) * 1000),
        )
        miss = _Miss(index, query, query_id, fp, submitted_at, picked_at, timings, lane, accepted_at)
        hit = self.cache.get(fp, now) if query.cache else None
        if hit is None:
            return miss
        if hit.source_query_id == query_id:
            # the same query sent again (a resumed backfill, a client retry): its row is stored
            # already, and a cache row in its place would erase what answering it cost
            log.debug("query %s is answered already; not answered again", query_id)
            return None
        return self._answered(miss, route="cache", answer=hit.answer, model=hit.model,
                              reason=f"exact cache: {hit.source_query_id}",
                              all_llm_cost_usd=hit.all_llm_cost_usd)

    def _second_pass(self, miss: _Miss, look: Lookup | None, vector: np.ndarray | None) -> Outgoing:
        if look is not None and look.entry is not None:
            return self._answered(miss, route="semantic_cache", answer=look.entry.answer,
                                  model=look.entry.model, similarity=look.similarity,
                                  reason=f"{look.reason}: {look.entry.source_query_id}",
                                  all_llm_cost_usd=look.entry.all_llm_cost_usd)
        decision = self.policy.decide(miss.query, vector)
        reason = decision.reason if look is None else f"{decision.reason}; {look.reason}"
        now = self.clock()
        miss.timings.routed_ms = max(0.0, (now - miss.picked_at) * 1000)  # semantic stage included
        request = RouteRequest(
            query=miss.query, query_id=miss.query_id, fingerprint=miss.fingerprint,
            track=decision.track, reason=reason, submitted_at=miss.submitted_at, routed_at=now,
            timings=miss.timings, escalate=decision.escalate, lane=miss.lane,
            accepted_at=miss.accepted_at, policy=decision.policy, score=decision.score,
            threshold=decision.threshold,
        )
        value = encode(request)
        if len(value) > self._max_request_bytes:
            # unreachable for a query within the limits; checked so nothing unproducible is sent
            raise InvalidMessage(f"route request too large: {len(value)} bytes, "
                                 f"limit {self._max_request_bytes}")
        return Outgoing(self.topics.route(decision.track, miss.lane), miss.fingerprint.encode(), value)

    def _answered(self, miss: _Miss, *, route: Route, answer: str, model: str, reason: str,
                  similarity: float | None = None, all_llm_cost_usd: float = 0.0) -> Outgoing:
        now = self.clock()
        timings = miss.timings
        timings.total_ms = max(0.0, (now - miss.accepted_at) * 1000)
        # a cache hit costs nothing; without Pointsman the same query would have gone to the LLM,
        # so its counterfactual is the one its source answer carried (same prompt for an exact
        # hit, a paraphrase of it for a semantic one)
        result = Result(
            query_id=miss.query_id, tenant=miss.query.tenant, route=route, answer=answer,
            model=model, similarity=similarity, fingerprint=miss.fingerprint, route_reason=reason,
            submitted_at=miss.submitted_at, completed_at=now, timings=timings,
            all_llm_cost_usd=all_llm_cost_usd, query=miss.query, lane=miss.lane,
            job=miss.query.job or "",
        )
        return Outgoing(self.topics.results, miss.query_id.encode(), encode_result(result))

    def learn(self, results: list[Result]) -> None:
        """Fill the caches from the results stream (every router sees every result)."""
        learned = [r for r in results
                   if r.route in CACHEABLE_ROUTES and r.error is None and r.fingerprint]
        entries = [SemanticEntry(key_for(r.query), r.answer, r.model, r.query_id, r.completed_at,
                                 r.all_llm_cost_usd)
                   for r in learned if self.semantic is not None and r.query is not None]
        with self._caches:
            for r in learned:
                self.cache.put(r.fingerprint, CachedAnswer(r.answer, r.model, r.query_id,
                                                           r.completed_at, r.all_llm_cost_usd))
            if entries and self.semantic is not None:
                self.semantic.put_batch(entries, self.clock())

    def _dead_letter(self, message: Incoming, reason: str, origin: str) -> Outgoing:
        # an oversized query is kept as a marked head of its bytes: enough to see what it was
        letter = DeadLetter(
            reason=printable(reason, 4000),
            raw=truncate_marked(raw_text(message.value), self.limits.max_query_bytes),
            source_topic=message.topic, partition=message.partition, offset=message.offset,
            key=truncate_marked(raw_text(message.key), 1024) if message.key is not None else None,
            failed_at=self.clock(),
        )
        return Outgoing(self.topics.deadletter, origin.encode(), encode_dead_letter(letter))
