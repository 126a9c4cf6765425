"""Savings in every row: the all-LLM counterfactual on each result, the SLM attempt paid by an
escalated answer, the SLM batch's cost shared out by tokens, and the report's savings columns."""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import FixedPolicy
from pipeline.report import render
from pipeline.semantic.cache import SemanticCache, SemanticSettings
from pipeline.semantic.embedders import HashingEmbedder
from tests.unit.test_workers import TOPICS, Gen, answer_all, request
from topics.codec import decode, encode
from topics.schemas import Query, Result, RouteRequest, Timings
from workers.answered import AnsweredIndex
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.pricing import PriceTable, apportion
from workers.slm_worker import SlmHandler, SlmWorkerSettings
from workers.upstreams import counterfactual_pricing, load_upstreams

PRICES = PriceTable()


@pytest.fixture()
def standin():  # type: ignore[no-untyped-def]
    server = StandinServer(StandinLLM(faults=Faults())).start()
    yield server
    server.stop()


class TokenModel:
    """Answers `"<prompt tokens> <completion tokens>"`-worded prompts with those token counts,
    taking long enough that the batch's CPU cost is measurable."""

    model_name = "stub"

    def __init__(self, confidence: float = 0.9) -> None:
        self.confidence = confidence

    def generate(self, prompts, *, max_tokens, temperature=0.0, seed=None):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        out = []
        for p in prompts:
            prompt, completion = (int(n) for n in p[-1]["content"].split())
            out.append(Gen(f"answer {prompt}", prompt, completion, self.confidence))
        return out


def slm(model: TokenModel, escalate_below: float = 0.5, llm_model: str = "gpt-4o") -> SlmHandler:
    settings = SlmWorkerSettings("unused:1", TOPICS, model_dir=None,  # type: ignore[arg-type]
                                 escalate_below=escalate_below, llm_model=llm_model)
    return SlmHandler(settings, model, settings.prices)


def results(out: list) -> dict[str, Result]:  # type: ignore[type-arg]
    return {r.query_id: r for r in (decode(o.value, Result) for o in out if o.topic == TOPICS.results)}


# -- apportioning ---------------------------------------------------------------------------------

def test_apportion_follows_the_tokens_and_loses_nothing() -> None:
    assert apportion(1.0, [30, 10]) == [0.75, 0.25]
    assert apportion(0.9, [0, 0, 0]) == pytest.approx([0.3, 0.3, 0.3])  # no weights: even shares
    assert apportion(1.0, []) == []
    shares = apportion(0.123, [7, 300, 41, 2])
    assert sum(shares) == pytest.approx(0.123)


def test_an_slm_batch_is_charged_by_tokens_not_evenly() -> None:
    out = slm(TokenModel())([request("small", "10 10"), request("big", "100 200")])
    by_id = results(out)
    small, big = by_id["small"], by_id["big"]
    assert small.route == big.route == "slm"
    assert small.cost_usd > 0
    assert big.cost_usd / small.cost_usd == pytest.approx(300 / 20)  # evenly split: 1
    assert small.slm_cost_usd == small.cost_usd and big.slm_cost_usd == big.cost_usd


# -- the counterfactual ---------------------------------------------------------------------------

def test_an_slm_answer_carries_the_configured_llms_price_for_its_tokens() -> None:
    by_id = results(slm(TokenModel(), llm_model="gpt-4o")(
        [request("1", "40 12"), request("2", "40 12", fp="fp-40 12")]))
    expected = (40 * 2.50 + 12 * 10.00) / 1e6  # gpt-4o: $2.50 / $10.00 per 1M tokens
    assert by_id["1"].all_llm_cost_usd == pytest.approx(expected)
    # a follower that shared the inference would have paid the LLM in full too
    assert by_id["2"].route == "coalesced" and by_id["2"].cost_usd == 0
    assert by_id["2"].all_llm_cost_usd == pytest.approx(expected)
    assert by_id["1"].all_llm_cost_usd > 100 * by_id["1"].cost_usd  # a CPU second is cheap


def test_an_answer_known_from_the_results_topic_keeps_its_counterfactual() -> None:
    index = AnsweredIndex()
    index.learn([Result(query_id="old", tenant="acme", route="slm", answer="A", model="stub",
                        fingerprint="fp-old", completed_at=time.time(), all_llm_cost_usd=0.002)])
    settings = SlmWorkerSettings("unused:1", TOPICS, model_dir=None)  # type: ignore[arg-type]
    handler = SlmHandler(settings, TokenModel(), settings.prices, index)
    by_id = results(handler([request("new", "5 5", fp="fp-old")]))
    assert by_id["new"].route == "coalesced" and by_id["new"].all_llm_cost_usd == 0.002


def test_an_llm_answer_is_its_own_counterfactual(standin) -> None:
    by_id = results(answer_all(standin.base_url, [request("1", "hello there"),
                                                  request("2", "hello there")]))
    first = by_id["1"]
    expected = PRICES.llm_cost("gpt-4o-mini", first.prompt_tokens, first.completion_tokens)
    assert first.route == "llm" and expected > 0
    assert first.all_llm_cost_usd == pytest.approx(expected)
    assert first.cost_usd == pytest.approx(first.all_llm_cost_usd) and first.slm_cost_usd == 0
    assert by_id["2"].route == "coalesced" and by_id["2"].all_llm_cost_usd == first.all_llm_cost_usd


def test_the_slm_worker_prices_with_the_first_upstream_and_needs_no_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "upstreams.toml"
    file.write_text('''
[[upstream]]
name = "main"
base_url = "https://example.invalid/v1"
model = "acme-large"
api_key_env = "POINTSMAN_TEST_KEY_NOT_SET"

[[upstream]]
name = "spare"
base_url = "https://spare.invalid/v1"
model = "gpt-4o"

[prices]
"acme-large" = [3.0, 12.0]
''')
    model, prices = counterfactual_pricing(file)
    assert (model, prices) == ("acme-large", {"acme-large": (3.0, 12.0)})
    table = PriceTable()
    table.prices.update(prices)
    assert table.all_llm_cost(model, 1000, 100) == pytest.approx((3000 + 1200) / 1e6)
    with pytest.raises(Exception, match="POINTSMAN_TEST_KEY_NOT_SET"):
        load_upstreams(file, env={})  # the LLM worker's reading needs the key; this one does not


# -- escalation pays the SLM attempt --------------------------------------------------------------

def test_an_escalated_request_carries_the_cost_of_its_slm_attempt() -> None:
    out = slm(TokenModel(confidence=0.1))([request("lead", "30 10"), request("copy", "30 10"),
                                           request("other", "10 30")])
    escalated = {r.query_id: r for r in (decode(o.value, RouteRequest) for o in out
                                         if o.topic == TOPICS.route_llm)}
    assert set(escalated) == {"lead", "copy", "other"}
    assert escalated["lead"].prior_cost_usd > 0 and escalated["other"].prior_cost_usd > 0
    assert escalated["copy"].prior_cost_usd == 0  # it shared the leader's one attempt


def test_a_failed_slm_attempt_still_charges_its_time() -> None:
    class Exploding(TokenModel):
        def generate(self, prompts, **kw):  # type: ignore[no-untyped-def]
            time.sleep(0.02)
            raise RuntimeError("boom")

    out = slm(Exploding())([request("1", "1 1")])
    assert decode(out[0].value, RouteRequest).prior_cost_usd > 0


def test_an_escalated_result_costs_the_llm_call_plus_the_slm_attempt(standin) -> None:
    attempt = 0.0004
    by_id = results(answer_all(standin.base_url, [
        request("esc", "why is the sky blue", escalation="low confidence", prior_cost_usd=attempt),
        request("plain", "why is the sky blue?"),
    ]))
    esc, plain = by_id["esc"], by_id["plain"]
    assert esc.route == "escalated" and esc.slm_cost_usd == attempt
    llm_part = PRICES.llm_cost("gpt-4o-mini", esc.prompt_tokens, esc.completion_tokens)
    assert esc.cost_usd == pytest.approx(llm_part + attempt)  # was llm_part alone
    assert esc.all_llm_cost_usd == pytest.approx(llm_part)  # escalating cost more than all-LLM
    assert plain.slm_cost_usd == 0 and plain.cost_usd == pytest.approx(plain.all_llm_cost_usd)


# -- the router's cache rows ----------------------------------------------------------------------

def _message(payload: dict[str, object], offset: int) -> Incoming:
    return Incoming(TOPICS.queries, 0, offset, 1000.0, None, json.dumps(payload).encode())


def test_cache_hits_carry_their_source_answers_counterfactual() -> None:
    semantic = SemanticCache(HashingEmbedder(), None, SemanticSettings(threshold=0.8))
    router = RouterCore(TOPICS, FixedPolicy("slm"), ExactCache(ttl_s=60), clock=lambda: 1002.0,
                        semantic=semantic)
    text = "how do I reset my password for the billing portal"
    first = decode(router.route_one(_message({"id": "src", "text": text}, 0), 1000.0).value,
                   RouteRequest)
    router.learn([Result(query_id="src", tenant="default", route="slm", answer="click reset",
                         model="m", fingerprint=first.fingerprint, completed_at=1001.0,
                         query=first.query, cost_usd=1e-6, all_llm_cost_usd=0.0031)])
    exact = decode(router.route_one(_message({"id": "again", "text": text}, 1), 1002.0).value, Result)
    near = decode(router.route_one(_message({"id": "near", "text": text + " please"}, 2),
                                   1002.0).value, Result)
    assert (exact.route, exact.cost_usd, exact.all_llm_cost_usd) == ("cache", 0.0, 0.0031)
    assert (near.route, near.cost_usd, near.all_llm_cost_usd) == ("semantic_cache", 0.0, 0.0031)


def test_the_new_fields_round_trip_and_old_messages_read_as_zero() -> None:
    old = RouteRequest(query=Query(text="x"), query_id="q", fingerprint="f", track="llm",
                       reason="r", submitted_at=1.0, routed_at=1.0, timings=Timings())
    raw = json.loads(encode(old))
    del raw["prior_cost_usd"]  # a request from a worker that predates the field
    assert decode(json.dumps(raw).encode(), RouteRequest).prior_cost_usd == 0.0
    result = Result(query_id="q", tenant="t", route="slm", all_llm_cost_usd=0.5, slm_cost_usd=0.1)
    back = decode(encode(result), Result)
    assert (back.all_llm_cost_usd, back.slm_cost_usd) == (0.5, 0.1)


# -- the report -----------------------------------------------------------------------------------

def test_the_report_shows_all_llm_cost_and_savings_per_route_and_in_total() -> None:
    route = dict(route="slm", queries=3, p50_ms=1, p95_ms=2, p99_ms=3, infer_ms=1, tokens=9,
                 cost_usd=0.00001, all_llm_cost_usd=0.001, savings=0.99, errors=0)
    empty = {**route, "route": "llm", "all_llm_cost_usd": 0.0, "savings": None}
    totals = dict(queries=3, hit_rate=0.0, cost_usd=0.00001, all_llm_cost_usd=0.001,
                  savings=0.99, dead_letters=0)
    console = Console(width=200, record=True)
    render({"routes": [route, empty], "totals": totals}, console)
    text = console.export_text()
    assert "all_llm_usd" in text and "savings" in text and "0.001 " in text
    assert "99.0%" in text and "all-LLM $0.001000" in text and "savings 99.0%" in text
