"""What both worker kinds share: decoding route requests, and turning answers into Results."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Message

from infra.kafka_io import Outgoing
from topics.codec import decode, raw_text
from topics.errors import InvalidMessage
from topics.limits import encode_dead_letter, encode_result
from topics.names import Topics
from topics.schemas import DeadLetter, Result, Route, RouteRequest, Step, Timings
from workers.coalesce import Group


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    confidence: float | None = None
    confidence_note: str = ""  # why the confidence was cut ("degenerate: repetition loop"), if it was
    inference_ms: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None
    all_llm_cost_usd: float = 0.0  # the all-LLM counterfactual (workers/pricing.py)
    upstream: str = ""  # the upstream that answered (its configured name), on the LLM track
    attempts: int = 0  # upstream calls made for it
    trail: tuple[Step, ...] = ()  # the tries that made it, in order (the last one answered)


@dataclass(frozen=True)
class Picked:
    request: RouteRequest
    picked_at: float


def decode_requests(
    messages: list[Message], topics: Topics
) -> tuple[list[Picked], list[Outgoing]]:
    """Route requests from a batch; anything undecodable becomes a dead letter."""
    now = time.time()
    picked, dead = [], []
    for message in messages:
        try:
            picked.append(Picked(decode(message.value(), RouteRequest), now))
        except InvalidMessage as exc:
            letter = DeadLetter(
                reason=f"bad route request: {exc.reason}", raw=raw_text(message.value()),
                source_topic=message.topic(), partition=message.partition(),
                offset=message.offset(), failed_at=now,
            )
            key = f"{message.topic()}:{message.partition()}:{message.offset()}".encode()
            dead.append(Outgoing(topics.deadletter, key, encode_dead_letter(letter)))
    return picked, dead


def result_for(
    request: RouteRequest, answer: Answer, route: Route, picked_at: float, *, coalesced: bool
) -> Result:
    now = time.time()
    timings = Timings(
        queued_ms=request.timings.queued_ms,
        routed_ms=request.timings.routed_ms,
        wait_ms=max(0.0, (picked_at - request.routed_at) * 1000),
        inference_ms=0.0 if coalesced else answer.inference_ms,
        total_ms=max(0.0, (now - request.started_at) * 1000),
    )
    reason = request.reason if request.escalation is None else f"escalated: {request.escalation}"
    # a follower shared the leader's inference, so it costs nothing of its own; an escalated
    # request also pays for the SLM attempt before it (carried on the request, leader only)
    own = 0.0 if coalesced else answer.cost_usd
    slm_cost = (own if route == "slm" else 0.0) + request.prior_cost_usd
    return Result(
        query_id=request.query_id, tenant=request.query.tenant,
        route="coalesced" if coalesced else route, answer=answer.text, model=answer.model,
        prompt_tokens=0 if coalesced else answer.prompt_tokens,
        completion_tokens=0 if coalesced else answer.completion_tokens,
        cost_usd=own + request.prior_cost_usd, confidence=answer.confidence,
        error=answer.error, fingerprint=request.fingerprint, route_reason=reason,
        submitted_at=request.submitted_at, completed_at=now, timings=timings,
        query=request.query,  # the question, for every row (only answered routes fill caches)
        # a coalesced asker would have paid the LLM in full too: same question, same counterfactual
        all_llm_cost_usd=answer.all_llm_cost_usd, slm_cost_usd=slm_cost,
        lane=request.lane, job=request.query.job or "",
        policy=request.policy, score=request.score, threshold=request.threshold,
        # a follower shares the answer, so its upstream and how it was made, but made no call
        upstream=answer.upstream, attempts=0 if coalesced else answer.attempts,
        trail=request.trail + answer.trail,
    )


def results_for_group(
    group: Group, answer: Answer, route: Route, picked_at: float, topics: Topics,
    *, leader_coalesced: bool = False,
) -> list[Outgoing]:
    """The leader's result, and a `coalesced` result for every follower that shared it."""
    out = []
    for i, request in enumerate([group.leader, *group.followers]):
        result = result_for(request, answer, route, picked_at, coalesced=i > 0 or leader_coalesced)
        out.append(Outgoing(topics.results, request.query_id.encode(), encode_result(result)))
    return out
