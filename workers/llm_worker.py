"""LLM proxy worker: answers route.llm requests through OpenAI-compatible upstreams.

Unlike the batch loop, calls run concurrently and finish out of order: each message is a task,
its offset is committed once it and every earlier one are done (workers/offsets.py). When
`max_in_flight` messages are open the consumer's partitions are paused, so a slow upstream
builds lag in Kafka, not memory in this process. Identical queries in flight share one call.

Live requests go first. Backfill-lane requests (route.llm.backfill) wait in a small local
lookahead and start only while live calls leave `backfill_reserve` upstream slots free
(workers/lanes.py), so a backlog of backfill calls never fills the upstream pool ahead of a live
request; with live traffic idle the backfill has the whole pool but the reserve.

Shadow requests (topics/shadow.py) come on their own topic, route.shadow, a lane with its own
small cap (`shadow.max_open`, paused apart from the live lane) and concurrency: they never take
a live request's slot, never hold back a live offset's commit, and start only while live calls
leave the upstream client idle (workers/shadow.py). A shadow ends as an evaluation on the
evaluations topic, or, if it fails, as a log line: never a Result, never a dead letter.

Nothing that goes wrong with one message pins its partition: any exception while decoding,
answering or encoding it becomes an error result (when the message is a readable route request)
and a dead letter, and its offset moves on. Every text that leaves (results, dead letters, log
lines) is redacted: outputs by topics.limits, which also makes them fit the broker, and log
lines here. On stop, calls in flight get `stop_grace_s` to finish; the rest are cancelled and
their offsets stay uncommitted, so they replay on restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from infra.kafka_io import Outgoing, PipelinedProducer, new_consumer
from topics.codec import decode, encode, raw_text
from topics.errors import PointsmanError, RetryableError
from topics.limits import encode_dead_letter, encode_result
from topics.names import Topics
from topics.redact import redact
from topics.schemas import MAX_OUTCOME_CHARS, DeadLetter, RouteRequest, Step
from topics.shadow import encode_evaluation
from workers.answered import AnsweredIndex
from workers.answers import Answer, decode_requests, result_for
from workers.coalesce import RecentAnswers
from workers.lanes import Lookahead, backfill_room
from workers.llm_client import ChatClient, LlmSettings
from workers.loop import StopFlag
from workers.offsets import OffsetTracker
from workers.pricing import PriceTable
from workers.shadow import ShadowJudge, ShadowRunner, ShadowSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmWorkerSettings:
    bootstrap: str
    topics: Topics
    llm: LlmSettings
    max_in_flight: int = 256
    # a query without deadline_s has none: a backlog (or a backfill) must not expire answers
    default_deadline_s: float | None = None
    commit_interval_s: float = 1.0
    stop_grace_s: float = 5.0  # on stop, calls in flight get this long, then are cancelled (replayed)
    prices: PriceTable = field(default_factory=PriceTable)
    group: str = "pointsman-llm"
    answered_lookback_s: float = 3600.0  # the results topic read back this far: what is answered
    answered_warmup_s: float = 30.0
    shadow: ShadowSettings = field(default_factory=ShadowSettings)  # shadow calls' own limits
    # upstream slots the backfill leaves free for live requests arriving (workers/lanes.py)
    backfill_reserve: int = 2


class LlmWorker:
    def __init__(self, settings: LlmWorkerSettings, client: ChatClient,
                 producer: PipelinedProducer | None = None,
                 answered: AnsweredIndex | None = None, judge: ShadowJudge | None = None) -> None:
        self.settings = settings
        self.client = client
        self.tracker = OffsetTracker()
        self.recent: RecentAnswers[Answer] = RecentAnswers()
        # what the results topic already answers: a backlog or a replay never pays twice
        self.answered = answered if answered is not None else AnsweredIndex()
        self.calls: dict[str, asyncio.Future[Answer]] = {}  # fingerprint -> the call in flight
        self._producer = producer
        self._stop = StopFlag()  # replaced by run()'s flag
        self._waiting: deque[Message] = deque()  # backfill requests read, not yet started
        self._paused: dict[str, set[tuple[str, int]]] = {}  # lane topic -> partitions paused
        self._assigned: set[tuple[str, int]] = set()  # kept by the rebalance callbacks
        # shadow requests (topics/shadow.py): judged, never answered to the user, lowest priority
        self.shadows = ShadowRunner(settings.shadow, client, settings.prices, judge,
                                    live_calls=lambda: len(self.calls))

    @property
    def producer(self) -> PipelinedProducer:
        if self._producer is None:  # created on first use: answering needs no broker
            self._producer = PipelinedProducer(self.settings.bootstrap,
                                               max_in_flight=self.settings.max_in_flight)
        return self._producer

    async def run(self, stop: StopFlag) -> None:
        self._stop = stop
        topics = self.settings.topics
        consumer = new_consumer(self.settings.bootstrap, self.settings.group,
                                [topics.route_llm, topics.route_llm_backfill, topics.route_shadow],
                                on_revoke=self._on_revoke, on_assign=self._on_assign)
        poller = asyncio.create_task(self.producer.poll_forever())
        tasks: set[asyncio.Task[None]] = set()
        # live requests up to max_in_flight, shadows up to their max_open: a full lane's
        # partitions are paused, so its lag stays in Kafka. Backfill requests wait in a local
        # lookahead and start only in the room live traffic leaves (workers/lanes.py).
        lanes = {topics.route_llm: self.settings.max_in_flight,
                 topics.route_shadow: self.settings.shadow.max_open}
        lookahead = Lookahead.of(self.client.settings.max_concurrency)
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                self._start_backfill(tasks)
                room = 0
                for topic, cap in lanes.items():
                    free = cap - self.tracker.in_flight_of(topic)
                    room += max(free, 0)
                    self._set_paused(consumer, topic, free <= 0)
                backfill_paused = lookahead.paused(len(self._waiting),
                                                   topics.route_llm_backfill in self._paused)
                self._set_paused(consumer, topics.route_llm_backfill, backfill_paused)
                if not backfill_paused:
                    room += lookahead.high - len(self._waiting)
                # timeout=0 never blocks: the event loop keeps serving the calls in flight; a paused
                # consumer still polls, which keeps it in the group
                messages = consumer.consume(max(room, 1), timeout=0)
                for message in messages:
                    if message.error() is not None:
                        continue
                    if message.topic() == topics.route_llm_backfill:
                        self._waiting.append(message)
                    else:
                        self._start(message, tasks)
                self._start_backfill(tasks)
                if time.monotonic() - last_commit >= self.settings.commit_interval_s:
                    self._commit(consumer)
                    last_commit = time.monotonic()
                await asyncio.sleep(0.002 if not messages else 0)
            await self._drain(tasks)
            self.producer.flush(self.settings.stop_grace_s)
            self._commit(consumer)
        finally:
            poller.cancel()
            consumer.close()

    def _start_backfill(self, tasks: set[asyncio.Task[None]]) -> None:
        """Start waiting backfill requests while live traffic leaves room (workers/lanes.py).
        They wait unstarted, so their offsets are not committed until they run."""
        topics = self.settings.topics
        room = backfill_room(
            live=self.tracker.in_flight_of(topics.route_llm),
            backfill=self.tracker.in_flight_of(topics.route_llm_backfill),
            shadows=self.shadows.calling, pool=self.client.settings.max_concurrency,
            max_in_flight=self.settings.max_in_flight, reserve=self.settings.backfill_reserve)
        for _ in range(min(room, len(self._waiting))):
            self._start(self._waiting.popleft(), tasks)

    def _set_paused(self, consumer: Consumer, topic: str, pause: bool) -> None:
        """Pause or resume a lane's partitions; pausing again touches only partitions assigned
        since (they start unpaused), so a lane that stays paused costs no call to librdkafka
        per loop (even consumer.assignment() is a round trip to its thread)."""
        if pause:
            done = self._paused.setdefault(topic, set())
            fresh = [tp for tp in self._assigned if tp[0] == topic and tp not in done]
            if fresh:
                consumer.pause([TopicPartition(t, p) for t, p in fresh])
                done.update(fresh)
        elif topic in self._paused:
            consumer.resume(_of_topic(consumer, topic))
            del self._paused[topic]

    async def _drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Let open calls finish for the grace period, then cancel the rest: their offsets stay
        uncommitted, so they are answered after the restart (a stuck upstream cannot hold stop)."""
        if not tasks:
            return
        _, pending = await asyncio.wait(set(tasks), timeout=self.settings.stop_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("stopping: %d messages still open after %.1fs, cancelled; they replay on "
                        "restart", len(pending), self.settings.stop_grace_s)

    def _start(self, message: Message, tasks: set[asyncio.Task[None]]) -> None:
        tp = (message.topic(), message.partition())
        self.tracker.started(tp, message.offset())
        task = asyncio.create_task(self._handle(message, tp))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_crash)

    async def _handle(self, message: Message, tp: tuple[str, int]) -> None:
        try:
            out = await self._outputs(message)
        except Exception as exc:  # a bug or an unexpected input: keep the message, move on
            _log_unexpected(f"handling offset {tp}:{message.offset()} failed", exc)
            out = self._failed(message, exc)
        if await self._deliver(out, tp, message.offset(), lambda exc: self._failed(message, exc)):
            self.tracker.finished(tp, message.offset())

    async def _outputs(self, message: Message) -> list[Outgoing]:
        picked, out = decode_requests([message], self.settings.topics)
        shadow_lane = message.topic() == self.settings.topics.route_shadow
        for item in picked:
            if item.request.shadow_of is not None:
                out += await self._shadow(item.request)
            elif shadow_lane:  # nothing to judge against; answering it would reach the user
                log.warning("request %s on the shadow topic has no served answer; dropped",
                            item.request.query_id)
            else:
                out += await self._answer(item.request, item.picked_at)
        return out

    async def _shadow(self, request: RouteRequest) -> list[Outgoing]:
        """An evaluation for the evaluations topic, or nothing: a shadow never becomes a Result."""
        evaluation = await self.shadows.evaluate(request)
        if evaluation is None:
            return []
        return [Outgoing(self.settings.topics.evaluations, request.query_id.encode(),
                         encode_evaluation(evaluation))]

    def _failed(self, message: Message, exc: BaseException) -> list[Outgoing]:
        """An error result and a dead letter for a message whose handling raised; just the dead
        letter (keyed by offset) if even that cannot be built."""
        reason = f"llm worker failed: internal error: {exc!r}"  # redacted by topics.limits
        try:
            request = decode(message.value(), RouteRequest)
            if request.shadow_of is not None:  # the user has an answer: never an error result
                log.warning("shadow of %s dropped: %s", request.query_id, redact(reason)[:500])
                return []
            answer = Answer("", self.client.settings.model, error=reason)
            route = "escalated" if request.escalation else "llm"
            result = result_for(request, answer, route, time.time(), coalesced=False)
            return [Outgoing(self.settings.topics.results, request.query_id.encode(),
                             encode_result(result)),
                    self._dead_letter(request, reason)]
        except Exception:
            letter = DeadLetter(
                reason=reason, raw=raw_text(message.value()), source_topic=message.topic(),
                partition=message.partition(), offset=message.offset(), failed_at=time.time(),
            )
            key = f"{message.topic()}:{message.partition()}:{message.offset()}".encode()
            return [Outgoing(self.settings.topics.deadletter, key, encode_dead_letter(letter))]

    async def _deliver(self, out: list[Outgoing], tp: tuple[str, int], offset: int,
                       fallback: Callable[[Exception], list[Outgoing]] | None = None) -> bool:
        """Send until the broker acknowledges (a resend may duplicate a result; the sink keeps
        one row per query). Gives up only when stopping: the offset then stays uncommitted
        and the message is replayed on restart. If the outputs themselves are refused (not a
        broker hiccup), they are replaced once by `fallback`'s error outputs."""
        delay = 0.1
        while True:
            try:
                await (await self.producer.send(out))
                return True
            except RetryableError as exc:
                if self._stop.is_set():
                    log.error("results for offset %s:%d not delivered before stop: %s",
                              tp, offset, redact(str(exc)))
                    return False
                log.warning("results for offset %s:%d not delivered, retrying in %.1fs: %s",
                            tp, offset, delay, redact(str(exc)))
            except Exception as exc:  # e.g. a message the producer refuses outright
                _log_unexpected(f"results for offset {tp}:{offset} refused", exc)
                if fallback is not None:
                    out, fallback = fallback(exc), None
                    continue
                if self._stop.is_set():
                    return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _answer(self, request: RouteRequest, picked_at: float) -> list[Outgoing]:
        if self.answered.has_result(request.query_id, request.fingerprint):
            return []  # its result is on the results topic already
        fp = request.fingerprint
        shared = self.calls.get(fp)
        known = ((self.recent.get(fp, time.time()) or self.answered.answer_for(fp))
                 if request.query.cache else None)
        coalesced = shared is not None or known is not None
        if shared is not None:
            answer = await asyncio.shield(shared)
        elif known is not None:
            answer = known
        else:
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self.calls[fp] = future
            try:
                answer = await self._call(request)
                future.set_result(answer)
            except BaseException:  # cancelled (_call answers every error): followers stop too
                future.cancel()
                raise
            finally:
                del self.calls[fp]
            if answer.error is None:
                self.recent.put(fp, answer, time.time())
        route = "escalated" if request.escalation else "llm"
        result = result_for(request, answer, route, picked_at, coalesced=coalesced)
        topics = self.settings.topics
        out = [Outgoing(topics.results, request.query_id.encode(), encode_result(result))]
        if answer.error is not None:
            out.append(self._dead_letter(request, answer.error))
        return out

    async def _call(self, request: RouteRequest) -> Answer:
        query = request.query
        budget = query.deadline_s or self.settings.default_deadline_s
        # counted from when the pipeline took the query in (a backfill's submitted_at is history)
        deadline = (None if budget is None
                    else time.monotonic() + (request.started_at + budget - time.time()))
        messages = [{"role": m.role, "content": m.content} for m in query.chat()]
        started = time.perf_counter()
        tries: list[Step] = []  # each upstream call, as the client makes it (failover included)
        try:
            done = await self.client.complete(messages, max_tokens=query.max_tokens,
                                              temperature=query.temperature, deadline=deadline,
                                              tries=tries)
            cost = self.settings.prices.llm_cost(done.model, done.prompt_tokens,
                                                 done.completion_tokens,
                                                 configured=self.client.settings.model)
            return Answer(
                text=done.text, model=done.model, prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                inference_ms=(time.perf_counter() - started) * 1000, cost_usd=cost,
                # the all-LLM path would have made this very call: its cost is the counterfactual
                # (an escalated result's cost_usd adds the SLM attempt on top: result_for)
                all_llm_cost_usd=cost, upstream=done.upstream, attempts=len(tries),
                trail=tuple(tries),
            )
        except PointsmanError as exc:
            # retries are spent or the deadline passed: answer with the error, never loop forever
            return Answer("", self.client.settings.model, error=f"llm failed: {exc}",
                          inference_ms=(time.perf_counter() - started) * 1000,
                          attempts=len(tries), trail=_with_end(tries, str(exc)))
        except Exception as exc:  # a bug or an unmapped client error: keep the query, say why
            _log_unexpected(f"LLM call for {request.query_id} failed unexpectedly", exc)
            return Answer("", self.client.settings.model, error=f"llm failed: internal error: {exc!r}",
                          inference_ms=(time.perf_counter() - started) * 1000,
                          attempts=len(tries), trail=tuple(tries))

    def _dead_letter(self, request: RouteRequest, error: str) -> Outgoing:
        letter = DeadLetter(
            reason=error, raw=encode(request.query).decode(),
            source_topic=self.settings.topics.route("llm", request.lane), query_id=request.query_id,
            tenant=request.query.tenant, failed_at=time.time(),
        )
        return Outgoing(self.settings.topics.deadletter, request.query_id.encode(),
                        encode_dead_letter(letter))

    def _commit(self, consumer: Consumer, only: set[tuple[str, int]] | None = None) -> None:
        positions = self.tracker.to_commit(only)
        if not positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed (the new owner replays these): %s", exc)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= revoked
        self._commit(consumer, revoked)
        self.tracker.forget(revoked)
        # read but never started: the partition's next owner reads them from the committed offset
        self._waiting = deque(m for m in self._waiting
                              if (m.topic(), m.partition()) not in revoked)
        for done in self._paused.values():  # assigned again, a partition starts unpaused
            done -= revoked


def _with_end(tries: list[Step], why: str) -> tuple[Step, ...]:
    """The calls made, and why the LLM track gave up if no call says it (the deadline passed, every
    circuit open): the trail's last step tells why there is no answer."""
    if tries and tries[-1].outcome == redact(why)[:MAX_OUTCOME_CHARS]:
        return tuple(tries)
    return (*tries, Step("llm", outcome=redact(why)[:MAX_OUTCOME_CHARS]))


def _of_topic(consumer: Consumer, topic: str) -> list[TopicPartition]:
    return [tp for tp in consumer.assignment() if tp.topic == topic]


def _log_unexpected(what: str, exc: BaseException) -> None:
    # the traceback rendered and redacted here: the key must not leave even without the log filter
    trace = "".join(traceback.format_exception(exc))
    log.error("%s", redact(f"{what}: {exc!r}\n{trace}"))


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log_unexpected("a message task crashed (its offset stays uncommitted)", exc)


def run_llm_worker(settings: LlmWorkerSettings, stop: StopFlag,
                   transport: httpx.AsyncBaseTransport | None = None,
                   answered: AnsweredIndex | None = None, judge: ShadowJudge | None = None) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=settings.llm.max_concurrency)
        async with httpx.AsyncClient(transport=transport, limits=limits) as http:
            worker = LlmWorker(settings, ChatClient(settings.llm, http), answered=answered,
                               judge=judge)
            await worker.run(stop)

    asyncio.run(main())
