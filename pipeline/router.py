"""The Faust router: a thin agent over RouterCore.

Each agent takes a micro-batch of raw events without acking them, routes the batch with pure
code and hands the outputs to confluent-kafka. The events are acked only when the broker has
acknowledged every output of their batch, and batches are acked in the order they were taken, so
Faust commits an offset only once its output is safe; meanwhile the agent already routes the next
batch (a bounded number are in flight).

A bad message never fails a batch (RouterCore dead-letters it). If the agent fails anyway, or an
output is not delivered, the process exits at once without a commit: Faust would restart the
agent past the unacked events and its gap handling can commit beyond them, and its shutdown would
wait forever for their acks. The supervisor restarts the router and Kafka replays from the last
committed offset (outputs are idempotent downstream). SIGTERM stops it within `stop_grace_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import faust

from infra.kafka_io import PipelinedProducer
from pipeline.cache_feed import ResultsFeed
from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import PolicyOptions, make_policy
from pipeline.semantic.cache import SemanticCache
from pipeline.validate import DEFAULT_LIMITS, Limits
from topics.names import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouterSettings:
    bootstrap: str
    topics: Topics
    policy: str = "baseline-length"
    policy_options: PolicyOptions = field(default_factory=PolicyOptions)
    semantic: bool = True
    semantic_verifier: bool = True  # MiniLM checks the static stage's grey band (if installed)
    semantic_threshold: float = 0.85
    semantic_tenant_thresholds: str = ""  # "acme=0.9,globex=0.95"; wins over the learned file
    # learned per-tenant thresholds (`pointsman train semantic`), reloaded when the file changes
    semantic_thresholds_file: str = ""
    # exploration: this share of the near misses (cosine within the band under the tenant's
    # threshold) is shadowed and judged, never served: the evidence to lower a threshold with
    semantic_explore_rate: float = 0.0
    semantic_explore_band: float = 0.05
    semantic_max_entries: int = 1_000_000
    batch_size: int = 2000
    batch_wait_s: float = 0.02
    cache_ttl_s: float = 3600.0
    cache_entries: int = 200_000
    app_id: str = "pointsman-router"
    max_in_flight: int = 8  # batches produced but not yet acknowledged by the broker
    cache_warmup_s: float = 30.0  # at most this long waiting for the cache replay at start
    # backfill yields to live traffic: it waits while the live lane had a full batch recently
    backfill_yield_s: float = 0.5
    # and takes small batches: a live query that arrives meanwhile waits for one of them at most
    # (both agents share one event loop; routing 2000 queries holds it for a few hundred ms)
    backfill_batch_size: int = 100
    stop_grace_s: float = 10.0  # after SIGTERM, exit without the final commit if still stopping
    # how soon the group gives a dead router's partitions to its restart (Faust's default: 60 s)
    session_timeout_s: float = 15.0
    max_query_bytes: int = DEFAULT_LIMITS.max_query_bytes  # larger raw queries are dead letters
    shadow_rate: float = 0.0  # share of semantic-cache hits also answered by the LLM and judged


def faust_datadir(app_id: str) -> str:
    """Faust creates a table directory even with the memory store; keep it out of the cwd."""
    path = Path(tempfile.gettempdir()) / "pointsman-faust" / app_id
    path.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    return str(path)


def build_app(settings: RouterSettings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        datadir=faust_datadir(settings.app_id),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=settings.batch_size * 4,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
    )
    core = RouterCore(
        settings.topics,
        make_policy(settings.policy, settings.policy_options),
        ExactCache(ttl_s=settings.cache_ttl_s, max_entries=settings.cache_entries),
        limits=Limits(max_query_bytes=settings.max_query_bytes),
        semantic=build_semantic_cache(settings) if settings.semantic else None,
        shadow_rate=settings.shadow_rate, explore_rate=settings.semantic_explore_rate,
    )
    producer = PipelinedProducer(settings.bootstrap, max_in_flight=settings.max_in_flight)
    feed = ResultsFeed(
        settings.bootstrap, settings.topics.results, core.learn, lookback_s=settings.cache_ttl_s
    )
    live_busy_until = 0.0
    acking: set[asyncio.Task[None]] = set()  # referenced until done, or asyncio may drop them

    async def route_stream(stream: faust.StreamT, *, live: bool) -> None:
        nonlocal live_busy_until
        # route with a warm cache: replay the recent results first (bounded, never blocks forever;
        # polled, not a thread, so a SIGTERM meanwhile is not held up by it)
        warm_until = time.monotonic() + settings.cache_warmup_s
        while not feed.caught_up.is_set() and time.monotonic() < warm_until:
            await asyncio.sleep(0.05)
        previous: asyncio.Task[None] | None = None
        try:
            size = settings.batch_size if live else settings.backfill_batch_size
            async for events in stream.noack_take(size, within=settings.batch_wait_s):
                if live and len(events) >= settings.batch_size:
                    live_busy_until = time.monotonic() + settings.backfill_yield_s
                batch = [_incoming(event) for event in events]
                delivered = await producer.send(core.route_batch(batch, time.time()))
                previous = app.loop.create_task(
                    _ack_when_delivered(stream, events, delivered, after=previous))
                acking.add(previous)
                previous.add_done_callback(acking.discard)
                if not live:
                    while time.monotonic() < live_busy_until:
                        await asyncio.sleep(0.05)
        except Exception:
            if app.should_stop:
                raise  # the consumer going away during a shutdown is not a failure
            # a bug, since bad messages are dead letters: never let Faust go on past the batch
            _halt("router agent failed; exiting so the restart replays from the last commit")

    raw = {"key_serializer": "raw", "value_serializer": "raw"}

    @app.agent(app.topic(settings.topics.queries, **raw), name="route-live")
    async def route_live(stream: faust.StreamT) -> None:
        await route_stream(stream, live=True)

    @app.agent(app.topic(settings.topics.backfill, **raw), name="route-backfill")
    async def route_backfill(stream: faust.StreamT) -> None:
        await route_stream(stream, live=False)

    @app.task
    async def start_feed() -> None:
        feed.start()

    @app.task
    async def poll_deliveries() -> None:
        await producer.poll_forever()

    return app


def build_semantic_cache(settings: RouterSettings) -> SemanticCache:
    from pipeline.semantic.cache import SemanticSettings, parse_thresholds
    from pipeline.semantic.embedders import make_embedder, minilm_available
    from pipeline.semantic.index import limit_blas_threads
    from pipeline.semantic.learned import WatchedThresholds

    limit_blas_threads(1)  # two BLAS threads fighting over two cores make each lookup 10x slower
    verifier = None
    if settings.semantic_verifier and minilm_available():
        verifier = make_embedder("minilm", threads=1, batch_size=32)
    return SemanticCache(make_embedder("static"), verifier, SemanticSettings(
        threshold=settings.semantic_threshold, ttl_s=settings.cache_ttl_s,
        max_entries=settings.semantic_max_entries,
        tenant_thresholds=WatchedThresholds(
            parse_thresholds(settings.semantic_tenant_thresholds),
            Path(settings.semantic_thresholds_file) if settings.semantic_thresholds_file else None),
        explore_band=settings.semantic_explore_band if settings.semantic_explore_rate > 0 else 0.0,
    ))


async def _ack_when_delivered(
    stream: faust.StreamT, events: list[faust.EventT], delivered: asyncio.Future[None],
    *, after: asyncio.Task[None] | None = None,
) -> None:
    try:
        await delivered
        if after is not None:
            await after  # ack in batch order: a later batch's offsets never pass an earlier one's
    except Exception:
        # never ack what may not have been written: exit, and the restart replays these events
        _halt("router output not delivered; exiting so the restart replays from the last commit")
    for event in events:
        await stream.ack(event)


def _halt(message: str, code: int = 70) -> NoReturn:
    """Exit now, without Faust's shutdown: it would commit acked offsets past unanswered events
    (or wait forever for their acks). Outputs are idempotent, so the replay is safe."""
    log.critical(message, exc_info=True)
    logging.shutdown()
    os._exit(code)


def _incoming(event: faust.EventT) -> Incoming:
    message = event.message
    return Incoming(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
        key=message.key,
        value=message.value,
    )


class RouterWorker(faust.Worker):
    """Faust's worker, with a deadline on its shutdown: after SIGINT/SIGTERM it stops cleanly
    (final commit of what is acked) or, if that takes over `grace_s`, exits anyway: what it did
    not commit is replayed on restart."""

    grace_s: float = 10.0

    def _on_sigint(self) -> None:
        self._arm_deadline()
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._arm_deadline()
        super()._on_sigterm()

    def _arm_deadline(self) -> None:
        def expire() -> None:
            log.warning("router still stopping after %.0f s; exiting without the final commit",
                        self.grace_s)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(self.grace_s, expire)
        timer.daemon = True
        timer.start()


def run_router(settings: RouterSettings, *, loglevel: str = "warn") -> None:
    """Run until SIGINT/SIGTERM: Faust's worker shuts down cleanly, or after `stop_grace_s`
    exits without the final commit (RouterWorker)."""
    app = build_app(settings)
    worker = RouterWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.grace_s = settings.stop_grace_s
    worker.spinner = None  # its cursor escape codes end up in logs and the demo's output
    worker.execute_from_commandline()
