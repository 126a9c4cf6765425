"""LLM proxy worker: answers route.llm requests through an OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from confluent_kafka import Message

from infra.kafka_io import Outgoing, OutputProducer
from topics.codec import encode
from topics.errors import PointsmanError
from topics.names import Topics
from topics.schemas import DeadLetter
from workers.answers import Answer, decode_requests, results_for_group
from workers.coalesce import Group, RecentAnswers, group_by_fingerprint
from workers.llm_client import ChatClient, LlmSettings
from workers.loop import LoopSettings, StopFlag, producing, run_loop
from workers.pricing import PriceTable


@dataclass(frozen=True)
class LlmWorkerSettings:
    bootstrap: str
    topics: Topics
    llm: LlmSettings
    batch_size: int = 64
    batch_wait_s: float = 0.05
    group: str = "pointsman-llm"


class LlmHandler:
    """Sync facade for the worker loop: each batch runs its upstream calls concurrently."""

    def __init__(self, settings: LlmWorkerSettings, client: ChatClient, prices: PriceTable,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.client = client
        self.prices = prices
        self.loop = loop
        self.recent: RecentAnswers[Answer] = RecentAnswers()

    def __call__(self, messages: list[Message]) -> list[Outgoing]:
        return self.loop.run_until_complete(self.handle(messages))

    async def handle(self, messages: list[Message]) -> list[Outgoing]:
        topics = self.settings.topics
        picked, out = decode_requests(messages, topics)
        if not picked:
            return out
        picked_at = picked[0].picked_at
        groups = group_by_fingerprint([p.request for p in picked])
        fresh = [g for g in groups if self.recent.get(g.leader.fingerprint, time.time()) is None]
        answers = await asyncio.gather(*(self._answer(g) for g in fresh))
        fresh_answers = {g.leader.fingerprint: a for g, a in zip(fresh, answers, strict=True)}
        for group in groups:
            answer = fresh_answers.get(group.leader.fingerprint)
            coalesced = answer is None
            if answer is None:
                answer = self.recent.get(group.leader.fingerprint, time.time())
            assert answer is not None
            route = "escalated" if group.leader.escalation else "llm"
            out += results_for_group(group, answer, route, picked_at, topics,
                                     leader_coalesced=coalesced)
            if answer.error is not None:
                out.append(self._dead_letter(group, answer.error))
            elif not coalesced:
                self.recent.put(group.leader.fingerprint, answer, time.time())
        return out

    async def _answer(self, group: Group) -> Answer:
        query = group.leader.query
        messages = [{"role": m.role, "content": m.content} for m in query.chat()]
        started = time.perf_counter()
        try:
            completion = await self.client.complete(
                messages, max_tokens=query.max_tokens, temperature=query.temperature
            )
        except PointsmanError as exc:
            # retries are spent: answer with the error (and dead-letter it), never loop forever
            return Answer("", self.client.settings.model, error=f"llm failed: {exc}",
                          inference_ms=(time.perf_counter() - started) * 1000)
        return Answer(
            text=completion.text, model=completion.model,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
            inference_ms=(time.perf_counter() - started) * 1000,
            cost_usd=self.prices.llm_cost(
                completion.model, completion.prompt_tokens, completion.completion_tokens,
                configured=self.client.settings.model,
            ),
        )

    def _dead_letter(self, group: Group, error: str) -> Outgoing:
        request = group.leader
        letter = DeadLetter(
            reason=error, raw=encode(request.query).decode(), source_topic=self.settings.topics.route_llm,
            query_id=request.query_id, tenant=request.query.tenant, failed_at=time.time(),
        )
        return Outgoing(self.settings.topics.deadletter, request.query_id.encode(), encode(letter))


def run_llm_worker(settings: LlmWorkerSettings, stop: StopFlag,
                   transport: httpx.AsyncBaseTransport | None = None) -> None:
    loop = asyncio.new_event_loop()
    limits = httpx.Limits(max_connections=settings.llm.max_concurrency)
    http = httpx.AsyncClient(transport=transport, limits=limits)
    try:
        handler = LlmHandler(settings, ChatClient(settings.llm, http), PriceTable(), loop)
        loop_settings = LoopSettings(
            settings.bootstrap, settings.group, (settings.topics.route_llm,),
            settings.batch_size, settings.batch_wait_s,
        )
        run_loop(loop_settings, producing(handler, OutputProducer(settings.bootstrap)), stop)
    finally:
        loop.run_until_complete(http.aclose())
        loop.close()
