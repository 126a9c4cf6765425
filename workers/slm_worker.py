"""SLM worker: answers route.slm requests with the local ONNX model, in micro-batches.

Low-confidence or failed answers are escalated to the LLM track instead of being returned, unless
the route request says the SLM must answer itself (`escalate=False`: a tenant forced to the SLM). The
confidence is the engine's mean token probability checked against the question for degenerate
output (workers.slm.confidence: loops, echoes, another script, empty answers).
A share (`shadow_rate`) of the answers it serves also goes to the LLM track as a shadow request,
which the LLM worker judges against its own answer (topics/shadow.py); the user sees only ours.
Live requests go first: backfill-lane requests (route.slm.backfill) run in short micro-batches
only while the live lane is idle (workers/lane_loop.py, workers/lanes.py).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import msgspec
from confluent_kafka import Message

from infra.kafka_io import Outgoing, OutputProducer
from topics.codec import encode
from topics.names import Topics
from topics.redact import redact
from topics.schemas import ANSWERED, MAX_OUTCOME_CHARS, RouteRequest, ShadowOf, Step
from topics.shadow import shadow_chosen, shadow_request
from workers.answered import AnsweredIndex
from workers.answers import Answer, decode_requests, results_for_group
from workers.coalesce import Group, RecentAnswers, group_by_fingerprint
from workers.lane_loop import LaneLoopSettings, run_lane_loop
from workers.loop import StopFlag, producing
from workers.pricing import PriceTable, apportion
from workers.slm.confidence import assess

log = logging.getLogger(__name__)


class Generator(Protocol):
    model_name: str

    def generate(self, prompts: Sequence[Sequence[dict[str, str]]], *, max_tokens: int | list[int],
                 temperature: float | list[float] = 0.0, seed: int | list[int] | None = None) -> list: ...


@dataclass(frozen=True)
class SlmWorkerSettings:
    bootstrap: str
    topics: Topics
    model_dir: Path
    threads: int = 2
    batch_size: int = 16  # int8 decodes ~4x the tokens/s at batch 16 vs 1 (BENCHMARKS.md)
    batch_wait_s: float = 0.05
    escalate_below: float = 0.0  # confidence under this goes to the LLM track; 0 disables
    group: str = "pointsman-slm"
    recent_ttl_s: float = 120.0  # this process's own answers, for copies just behind the first
    # the results topic read back from this far (and remembered as long): what is answered already
    answered_lookback_s: float = 3600.0
    answered_warmup_s: float = 30.0  # longest wait for that read-back before consuming
    # each answer's all-LLM counterfactual is priced at this model (the LLM track's first upstream)
    llm_model: str = "gpt-4o-mini"
    prices: PriceTable = field(default_factory=PriceTable)  # with the upstreams file's overrides
    shadow_rate: float = 0.0  # share of served answers also sent to the LLM track to be judged
    # live first (workers/lanes.py): a backfill micro-batch runs only when no live request came
    # within backfill_yield_s, and holds at most backfill_batch requests until live traffic has
    # been away for backfill_calm_s (then batch_size)
    backfill_batch: int = 4
    backfill_yield_s: float = 0.5
    backfill_calm_s: float = 30.0


class SlmHandler:
    def __init__(self, settings: SlmWorkerSettings, engine: Generator, prices: PriceTable,
                 answered: AnsweredIndex | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.prices = prices
        self.recent: RecentAnswers[Answer] = RecentAnswers(ttl_s=settings.recent_ttl_s)
        # what the results topic already holds (fed by the app); left empty when not given
        self.answered = answered if answered is not None else AnsweredIndex()
        self.skipped = 0  # requests whose query id had a result already

    def __call__(self, messages: list[Message]) -> list[Outgoing]:
        topics = self.settings.topics
        picked, out = decode_requests(messages, topics)
        fresh = [p.request for p in picked
                 if not self.answered.has_result(p.request.query_id, p.request.fingerprint)]
        if len(fresh) < len(picked):
            # replayed or backlogged: its result is on the results topic already; commit, resend nothing
            self.skipped += len(picked) - len(fresh)
            log.info("skipped %d route requests already answered", len(picked) - len(fresh))
        if not fresh:
            return out
        picked_at = picked[0].picked_at
        to_run: list[Group] = []
        now = time.time()
        for group in group_by_fingerprint(fresh):
            fp = group.leader.fingerprint
            known = ((self.recent.get(fp, now) or self.answered.answer_for(fp))
                     if group.leader.query.cache else None)
            if known is not None:
                out += results_for_group(group, known, "slm", picked_at, topics, leader_coalesced=True)
            else:
                to_run.append(group)
        for group, answer in self._infer(to_run):
            if group.leader.escalate and self._should_escalate(answer):
                out += self._escalate(group, answer)
                continue
            answer = replace(answer, trail=(Step("slm", answer.model, outcome=ANSWERED),))
            self.recent.put(group.leader.fingerprint, answer, time.time())
            out += results_for_group(group, answer, "slm", picked_at, topics)
            out += self._shadow(group.leader, answer)
        return out

    def _should_escalate(self, answer: Answer) -> bool:
        return answer.error is not None or (answer.confidence or 0.0) < self.settings.escalate_below
    def _shadow(self, request: RouteRequest, answer: Answer) -> list[Outgoing]:
        """The leader's answer (the one with route slm) shadowed, when the hash chooses it."""
        if not shadow_chosen(request.query_id, request.fingerprint, self.settings.shadow_rate):
            return []
        served = ShadowOf(route="slm", answer=answer.text, model=answer.model,
                          cost_usd=answer.cost_usd, confidence=answer.confidence)
        value = shadow_request(request, served, routed_at=time.time())
        if value is None:
            log.warning("shadow of %s not sent: too large for the broker", request.query_id)
            return []
        return [Outgoing(self.settings.topics.route_shadow, request.fingerprint.encode(), value)]

    def _infer(self, groups: list[Group]) -> list[tuple[Group, Answer]]:
        """One engine call for the whole micro-batch; each query keeps its own budget,
        temperature and seed (a seed from the fingerprint makes a sampled answer repeatable)."""
        if not groups:
            return []
        queries = [g.leader.query for g in groups]
        prompts = [[{"role": m.role, "content": m.content} for m in q.chat()] for q in queries]
        started = time.perf_counter()
        try:
            generations = self.engine.generate(
                prompts, max_tokens=[q.max_tokens for q in queries],
                temperature=[q.temperature for q in queries],
                seed=[zlib.crc32(g.leader.fingerprint.encode()) for g in groups],
            )
        except Exception as exc:  # the model failing must not stop the stream: escalate
            log.exception("SLM generation failed for %d queries", len(groups))
            spent = self.prices.cpu_cost(time.perf_counter() - started, self.settings.threads)
            # the time was spent all the same; with no tokens to weigh, each pays an even share
            failed = Answer("", self.engine.model_name, error=f"slm error: {exc}",
                            cost_usd=spent / len(groups))
            return [(g, failed) for g in groups]
        seconds = time.perf_counter() - started
        # a long prompt or a long answer takes more of the batch's compute than a short one
        costs = apportion(self.prices.cpu_cost(seconds, self.settings.threads),
                          [gen.prompt_tokens + gen.completion_tokens for gen in generations])
        llm_model = self.settings.llm_model
        answers = []
        for group, prompt, gen, cost in zip(groups, prompts, generations, costs, strict=True):
            judged = assess(_question(prompt), gen.text, raw_confidence=gen.confidence,
                            finish_reason=getattr(gen, "finish_reason", "stop"),
                            max_tokens=group.leader.query.max_tokens)
            note = f"{judged.reason}; raw {judged.raw:.2f}" if judged.flags else ""
            answers.append((group, Answer(
                text=gen.text, model=self.engine.model_name, prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens, confidence=judged.confidence,
                confidence_note=note, inference_ms=seconds * 1000, cost_usd=cost,
                all_llm_cost_usd=self.prices.all_llm_cost(llm_model, gen.prompt_tokens,
                                                          gen.completion_tokens),
            )))
        return answers

    def _escalate(self, group: Group, answer: Answer) -> list[Outgoing]:
        reason = answer.error or (
            f"low confidence {answer.confidence:.2f} < {self.settings.escalate_below:.2f}"
            + (f" ({answer.confidence_note})" if answer.confidence_note else "")
        )
        # the SLM's try and why it handed on, first in the trail of the LLM's result (redacted:
        # an engine error's text leaves the process with it)
        tried = Step("slm", answer.model, outcome=redact(reason)[:MAX_OUTCOME_CHARS])
        out = []
        for i, request in enumerate([group.leader, *group.followers]):
            # the attempt ran once, for the leader: only its result carries the attempt's cost
            escalated = msgspec.structs.replace(request, track="llm", escalation=reason,
                                                prior_cost_usd=answer.cost_usd if i == 0 else 0.0,
                                                trail=(*request.trail, tried))
            out.append(Outgoing(self.settings.topics.route("llm", request.lane), request.fingerprint.encode(),
                                encode(escalated)))
        return out


def _question(prompt: Sequence[dict[str, str]]) -> str:
    """What the answer answers: the last user message (system prompts are not the question)."""
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1]["content"] if prompt else "")


def run_slm_worker(settings: SlmWorkerSettings, stop: StopFlag, engine: Generator | None = None,
                   answered: AnsweredIndex | None = None) -> None:
    if engine is None:
        from workers.slm.engine import SlmEngine

        engine = SlmEngine(settings.model_dir, threads=settings.threads)
    loop = LaneLoopSettings(
        settings.bootstrap, settings.group, settings.topics.route_slm,
        settings.topics.route_slm_backfill, settings.batch_size, settings.batch_wait_s,
        backfill_batch=settings.backfill_batch, yield_s=settings.backfill_yield_s,
        calm_s=settings.backfill_calm_s,
    )
    handler = SlmHandler(settings, engine, settings.prices, answered)
    run_lane_loop(loop, producing(handler, OutputProducer(settings.bootstrap)), stop)
