"""How each result says it was decided and made: the routing decision (policy, score, threshold)
from the router, the upstream that answered and the calls it took, and the trail of tries (the
SLM that escalated, then each upstream call), as the results table stores them."""

from __future__ import annotations

import json

import pytest

from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import BaselineLengthPolicy
from tests.unit.test_savings import TokenModel, slm
from tests.unit.test_workers import TOPICS, FakeMessage, answer_all, request
from topics.codec import decode, encode
from topics.schemas import Result, RouteRequest, Step
from workers.llm_standin import Faults, StandinLLM, StandinServer


@pytest.fixture()
def standin():  # type: ignore[no-untyped-def]
    server = StandinServer(StandinLLM(faults=Faults())).start()
    yield server
    server.stop()


def _message(payload: dict[str, object], offset: int) -> Incoming:
    return Incoming(TOPICS.queries, 0, offset, 1000.0, None, json.dumps(payload).encode())


def test_the_route_request_carries_the_decision_and_a_cache_hit_has_none() -> None:
    router = RouterCore(TOPICS, BaselineLengthPolicy(max_prompt_chars=40), ExactCache(ttl_s=60),
                        clock=lambda: 1001.0)
    query = {"text": "x" * 10, "max_tokens": 64}
    routed = decode(router.route_one(_message({"id": "q", **query}, 0), 1000.0).value, RouteRequest)
    assert (routed.policy, routed.score, routed.threshold) == ("baseline-length", 0.25, 1.0)
    router.learn([Result(query_id="q", tenant="default", route="slm", answer="a", model="m",
                         fingerprint=routed.fingerprint, completed_at=1001.0, query=routed.query)])
    hit = decode(router.route_one(_message({"id": "again", **query}, 1), 1001.0).value, Result)
    assert hit.route == "cache" and (hit.policy, hit.score, hit.threshold) == ("", None, None)
    assert (hit.upstream, hit.attempts, hit.trail) == ("", 0, ())


def test_an_escalation_is_the_first_step_of_the_llm_results_trail(standin) -> None:  # type: ignore[no-untyped-def]
    out = slm(TokenModel(confidence=0.1))([request("esc", "30 10", policy="learned", score=0.2,
                                                   threshold=0.6)])
    (escalated,) = [decode(o.value, RouteRequest) for o in out if o.topic == TOPICS.route_llm]
    assert [(s.track, s.model) for s in escalated.trail] == [("slm", "stub")]
    assert escalated.trail[0].outcome.startswith("low confidence 0.")
    (result,) = [decode(o.value, Result)
                 for o in answer_all(standin.base_url, [FakeMessage(encode(escalated))])
                 if o.topic == TOPICS.results]
    assert result.route == "escalated" and result.error is None
    assert [(s.track, s.upstream, s.outcome) for s in result.trail] == [
        ("slm", "", escalated.trail[0].outcome), ("llm", "standin", "answered")]
    assert (result.upstream, result.attempts) == ("standin", 1)
    assert (result.policy, result.score, result.threshold) == ("learned", 0.2, 0.6)  # the router's


def test_an_slm_answer_has_one_step_and_no_upstream() -> None:
    out = slm(TokenModel(confidence=0.9))([request("s", "30 10")])
    (result,) = [decode(o.value, Result) for o in out if o.topic == TOPICS.results]
    assert result.route == "slm" and result.trail == (Step("slm", "stub", outcome="answered"),)
    assert (result.upstream, result.attempts) == ("", 0)


def test_failed_calls_are_each_a_step_and_a_follower_makes_no_call_of_its_own() -> None:
    server = StandinServer(StandinLLM(faults=Faults(server_error=1.0))).start()
    try:
        outs = answer_all(server.base_url, [request("f", "hello")], retries=2)
    finally:
        server.stop()
    (failed,) = [decode(o.value, Result) for o in outs if o.topic == TOPICS.results]
    assert failed.error is not None and failed.upstream == "" and failed.attempts == 3
    assert [s.upstream for s in failed.trail] == ["standin"] * 3
    assert all(s.outcome == "standin answered 500" for s in failed.trail)


def test_a_coalesced_follower_shares_the_upstream_but_made_no_call(standin) -> None:  # type: ignore[no-untyped-def]
    outs = answer_all(standin.base_url, [request("lead", "same"), request("copy", "same")])
    by_id = {r.query_id: r for r in (decode(o.value, Result) for o in outs
                                     if o.topic == TOPICS.results)}
    routes = {r.route for r in by_id.values()}
    assert routes == {"llm", "coalesced"}
    leader = next(r for r in by_id.values() if r.route == "llm")
    follower = next(r for r in by_id.values() if r.route == "coalesced")
    assert (leader.upstream, leader.attempts) == ("standin", 1)
    assert (follower.upstream, follower.attempts) == ("standin", 0)
