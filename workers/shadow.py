"""The LLM worker's shadow calls: answer a shadow request fresh, judge the served answer by it.

Shadows are the lowest priority in the worker. They arrive on their own topic, whose
partitions the worker pauses while `max_open` shadows are open (their lag stays in Kafka); at
most `concurrency` call the upstream at once, and each starts only while live calls leave the
upstream client a free slot. A shadow that fails anywhere (its call, its judge, waiting longer
than `max_wait_s`) is logged and dropped: no retry beyond the client's own bounded ones, no dead
letter, and never a Result: the user was served already.

The judge is handed in (the app builds pipeline.eval.judge.AnswerJudge), so this module imports
nothing from the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from topics.errors import PointsmanError
from topics.redact import redact
from topics.schemas import Evaluation, RouteRequest
from workers.llm_client import ChatClient, Completion
from workers.pricing import PriceTable

log = logging.getLogger(__name__)

RUBRIC_MAX_TOKENS = 8  # the judge answers one number


class Verdict(Protocol):
    judge: str
    score: float


class ShadowJudge(Protocol):
    @property
    def uses_llm(self) -> bool: ...

    def exact(self, question: str, served: str, shadow: str) -> Verdict | None: ...

    def embedding(self, served: str, shadow: str) -> Verdict: ...

    def rubric_messages(self, question: str, served: str, shadow: str) -> list[dict[str, str]]: ...

    def parse(self, reply: str) -> float | None: ...


@dataclass(frozen=True)
class ShadowSettings:
    concurrency: int = 2  # shadow calls at once; each borrows a slot live calls leave idle
    max_open: int = 16  # shadow messages open in the worker; beyond it their partitions pause
    max_wait_s: float = 300.0  # a shadow waiting longer than this for an idle slot is dropped
    timeout_s: float = 60.0  # the shadow call and its judge call, each
    judge: str = "auto"  # auto: exact, else embedding; llm: exact, else the LLM rubric
    judge_embedder: str = "static"  # the embedder for free-text answers (static, minilm, hashing)


@dataclass(frozen=True)
class _Judged:
    judge: str
    score: float
    cost_usd: float = 0.0


def _unit(score: float) -> float:
    """A score in [0, 1]: NaN (which JSON would carry as null, and no sink decode) reads as 0."""
    return 0.0 if math.isnan(score) else min(1.0, max(0.0, score))


class ShadowRunner:
    def __init__(self, settings: ShadowSettings, client: ChatClient, prices: PriceTable,
                 judge: ShadowJudge | None, live_calls: Callable[[], int]) -> None:
        self.settings = settings
        self.client = client
        self.prices = prices
        self.judge = judge
        self.live_calls = live_calls  # live upstream calls open now
        self._slots = asyncio.Semaphore(settings.concurrency)
        self.calling = 0  # shadows past the wait, calling the upstream (or judging) now
        self.judged = 0
        self.dropped = 0

    async def evaluate(self, request: RouteRequest) -> Evaluation | None:
        """The evaluation of one shadow request, or None when it failed or waited too long."""
        if self.judge is None:
            return self._drop(request, "no judge configured in this worker")
        async with self._slots:
            if not await self._idle_slot():
                return self._drop(request, "no idle upstream slot in time")
            try:
                return await self._evaluate(request, self.judge)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a shadow must never fail the message or its partition
                return self._drop(request, f"{type(exc).__name__}: {exc}")
            finally:
                self.calling -= 1

    async def _idle_slot(self) -> bool:
        """Wait until live calls and running shadows leave the client a free slot, and take it:
        live traffic goes first, and shadows never queue a live call inside the client."""
        deadline = time.monotonic() + self.settings.max_wait_s
        while self.live_calls() + self.calling >= self.client.settings.max_concurrency:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        self.calling += 1  # no await since the check: the slot is ours
        return True

    async def _complete(self, messages: Sequence[dict[str, str]], max_tokens: int,
                        temperature: float) -> tuple[Completion, float]:
        done = await self.client.complete(list(messages), max_tokens=max_tokens,
                                          temperature=temperature,
                                          deadline=time.monotonic() + self.settings.timeout_s)
        cost = self.prices.llm_cost(done.model, done.prompt_tokens, done.completion_tokens,
                                    configured=self.client.settings.model)
        return done, cost

    async def _evaluate(self, request: RouteRequest, judge: ShadowJudge) -> Evaluation | None:
        served = request.shadow_of
        assert served is not None
        query = request.query
        messages = [{"role": m.role, "content": m.content} for m in query.chat()]
        try:
            shadow, shadow_cost = await self._complete(messages, query.max_tokens, query.temperature)
        except PointsmanError as exc:
            return self._drop(request, f"shadow call failed: {exc}")
        question = "\n".join(m["content"] for m in messages)
        verdict = await self._judge(judge, question, served.answer, shadow.text)
        self.judged += 1
        return Evaluation(
            query_id=request.query_id, tenant=query.tenant, route=served.route,
            judge=verdict.judge, score=_unit(verdict.score), fingerprint=request.fingerprint,
            served_model=served.model, shadow_model=shadow.model, served_cost_usd=served.cost_usd,
            shadow_cost_usd=shadow_cost + verdict.cost_usd, judge_cost_usd=verdict.cost_usd,
            shadow_prompt_tokens=shadow.prompt_tokens,
            shadow_completion_tokens=shadow.completion_tokens, confidence=served.confidence,
            similarity=served.similarity, source_query_id=served.source_query_id,
            question=question, served_answer=served.answer, shadow_answer=shadow.text,
            submitted_at=request.submitted_at, evaluated_at=time.time(),
        )

    async def _judge(self, judge: ShadowJudge, question: str, served: str, shadow: str) -> _Judged:
        exact = judge.exact(question, served, shadow)
        if exact is not None:
            return _Judged(exact.judge, exact.score)
        cost = 0.0
        if judge.uses_llm:
            try:
                reply, cost = await self._complete(
                    judge.rubric_messages(question, served, shadow), RUBRIC_MAX_TOKENS, 0.0)
                score = judge.parse(reply.text)
                if score is not None:
                    return _Judged("llm", score, cost)
                log.info("LLM judge gave no score (%r); judged by embedding", redact(reply.text)[:80])
            except PointsmanError as exc:  # the judge failing costs the judgement, not the shadow
                log.warning("LLM judge call failed, judged by embedding: %s", redact(str(exc))[:300])
        fallback = judge.embedding(served, shadow)
        return _Judged(fallback.judge, fallback.score, cost)

    def _drop(self, request: RouteRequest, why: str) -> None:
        self.dropped += 1
        log.warning("shadow of %s dropped: %s", request.query_id, redact(why)[:500])
        return None
