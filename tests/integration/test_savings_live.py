"""Savings in every row, live: real broker, Faust router, LLM worker on the local stand-in, real
(tiny) SLM, sink into embedded ClickHouse. An escalated row's cost includes its SLM attempt, and
every row (cache, coalesced and escalated ones too) carries an all-LLM counterfactual."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infra.kafka_io import Outgoing, OutputProducer
from pipeline.config import Config
from pipeline.roles import serve_slm
from tests.harness import Pipeline
from workers.loop import StopFlag
from workers.pricing import PriceTable
from workers.slm.engine import SlmEngine

pytestmark = pytest.mark.integration

RESULTS = "SELECT count() FROM pointsman.results FINAL"
ROWS = ("SELECT query_id, route, error, prompt_tokens, completion_tokens, cost_usd, "
        "all_llm_cost_usd, slm_cost_usd FROM pointsman.results FINAL")
LLM_MODEL = "gpt-4o-mini"  # the model the stand-in is asked for (POINTSMAN_LLM_MODEL's default)


class SteeredEngine:
    """The real tiny engine; only its confidence is set by the prompt ("hard" ones fall under the
    escalation bar, the rest clear it), so the test decides which answers escalate."""

    def __init__(self, engine: SlmEngine) -> None:
        self.engine, self.model_name = engine, engine.model_name

    def generate(self, prompts: list, **kw: Any) -> list:  # type: ignore[type-arg]
        out = self.engine.generate(prompts, **kw)
        return [dataclasses.replace(gen, confidence=0.0 if "hard" in p[-1]["content"] else 0.99)
                for p, gen in zip(prompts, out, strict=True)]


@pytest.fixture()
def slm_worker(pipeline: Pipeline, broker: str, tiny_model: Path) -> Iterator[None]:
    config = Config(bootstrap=broker, topic_prefix=pipeline.topics.prefix, slm_model=tiny_model,
                    slm_threads=1, slm_escalate_below=0.5)
    settings = dataclasses.replace(config.slm(), llm_model=LLM_MODEL, answered_warmup_s=10)
    stop = StopFlag()
    worker = threading.Thread(target=serve_slm, daemon=True,
                              args=(settings, stop, SteeredEngine(SlmEngine(tiny_model, threads=1))))
    worker.start()
    yield
    stop.set()
    worker.join(30)


def send(pipeline: Pipeline, broker: str, queries: list[dict[str, Any]]) -> None:
    producer = OutputProducer(broker)
    producer.send([Outgoing(pipeline.topics.queries, None, json.dumps({"max_tokens": 6, **q}).encode())
                   for q in queries])
    producer.deliver()


def test_every_row_carries_its_counterfactual_and_escalations_pay_the_slm_attempt(
        pipeline: Pipeline, broker: str, slm_worker: None) -> None:
    pipeline.start("sink", "router", "llm")
    first = ([{"id": f"easy-{i}", "text": f"easy question {i}"} for i in range(3)]
             + [{"id": f"hard-{i}", "text": f"hard question {i}"} for i in range(3)]
             # a budget over the baseline policy's 256 tokens: straight to the LLM
             + [{"id": f"long-{i}", "text": f"long question {i}", "max_tokens": 257} for i in range(2)]
             # copies sent with their originals: one inference, the copy answered as coalesced
             + [{"id": "easy-0-copy", "text": "easy question 0"},
                {"id": "hard-0-copy", "text": "hard question 0"}])
    send(pipeline, broker, first)
    assert pipeline.wait_until(RESULTS, len(first), timeout=300) == len(first)
    # asked again once answered: the router's exact cache answers
    again = [{"id": "easy-1-later", "text": "easy question 1"},
             {"id": "hard-1-later", "text": "hard question 1"}]
    send(pipeline, broker, again)
    total = len(first) + len(again)
    assert pipeline.wait_until(RESULTS, total, timeout=120) == total

    columns, rows = pipeline.reader().query(ROWS)
    # costs are Decimal(18, 9) (migration 008); compared here with the float prices
    by_id = {row[0]: {c: float(v) if isinstance(v, Decimal) else v
                      for c, v in zip(columns, row, strict=True)} for row in rows}
    routes = {r["route"] for r in by_id.values()}
    assert {"slm", "escalated", "llm", "coalesced", "cache"} <= routes, routes
    assert all(r["error"] == "" for r in by_id.values())
    prices = PriceTable()

    def leader(qid: str) -> dict:
        """Of a query and its copy, the one answered (the router takes either one first: they
        arrive on different partitions); the other is the coalesced copy."""
        pair = [by_id[q] for q in (qid, f"{qid}-copy") if q in by_id]
        answered = [r for r in pair if r["route"] != "coalesced"]
        assert len(answered) == 1 and len(pair) - 1 == sum(r["route"] == "coalesced" for r in pair), pair
        return answered[0]

    for qid in ("hard-0", "hard-1", "hard-2"):
        row = leader(qid)
        assert row["route"] == "escalated" and row["slm_cost_usd"] > 0, row
        llm_part = prices.llm_cost(LLM_MODEL, row["prompt_tokens"], row["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(llm_part + row["slm_cost_usd"]), row
        assert row["all_llm_cost_usd"] == pytest.approx(llm_part), row
    for qid in ("easy-0", "easy-1", "easy-2"):
        row = leader(qid)
        assert row["route"] == "slm" and row["slm_cost_usd"] == row["cost_usd"] > 0, row
        assert row["all_llm_cost_usd"] == pytest.approx(
            prices.llm_cost(LLM_MODEL, row["prompt_tokens"], row["completion_tokens"])), row
    for qid in ("long-0", "long-1"):
        assert by_id[qid]["route"] == "llm" and by_id[qid]["slm_cost_usd"] == 0
    # every row has a counterfactual: cache and coalesced rows carry their source answer's
    assert all(r["all_llm_cost_usd"] > 0 for r in by_id.values()), by_id
    assert by_id["easy-1-later"]["all_llm_cost_usd"] == by_id["easy-1"]["all_llm_cost_usd"]
    assert by_id["hard-1-later"]["all_llm_cost_usd"] == by_id["hard-1"]["all_llm_cost_usd"]

    report = pipeline.cli("report", "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    per_route = {r["route"]: r for r in data["routes"]}
    assert per_route["cache"]["savings"] == 1.0 and per_route["escalated"]["savings"] < 0
    assert data["totals"]["all_llm_cost_usd"] > data["totals"]["cost_usd"] > 0
    assert 0 < data["totals"]["savings"] < 1


DECIDED = ("SELECT query_id, route, model, policy, score, threshold, upstream, attempts, trail.track, "
           "trail.model, trail.upstream, trail.outcome, toTypeName(cost_usd), toTypeName(total_ms), "
           "total_ms > 0 FROM pointsman.results FINAL")


def test_every_row_says_how_it_was_decided_and_made(
        pipeline: Pipeline, broker: str, slm_worker: None) -> None:
    """The routing decision, the upstream that answered and its attempts, and the trail of tries,
    as ClickHouse columns: from the router and workers through the sink."""
    pipeline.start("sink", "router", "llm")
    send(pipeline, broker, [{"id": "easy", "text": "easy question"},
                            {"id": "hard", "text": "hard question"},
                            {"id": "long", "text": "long question", "max_tokens": 512}])
    assert pipeline.wait_until(RESULTS, 3, timeout=300) == 3
    send(pipeline, broker, [{"id": "easy-again", "text": "easy question"}])  # the exact cache's
    assert pipeline.wait_until(RESULTS, 4, timeout=120) == 4
    columns, rows = pipeline.reader().query(DECIDED)
    by_id = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    easy, hard, long, again = (by_id[q] for q in ("easy", "hard", "long", "easy-again"))

    def decision(row: dict) -> tuple:
        return row["route"], row["policy"], row["score"], row["threshold"]

    assert decision(easy) == ("slm", "baseline-length", pytest.approx(13 / 400), 1.0)  # its 13 chars of 400
    assert (easy["upstream"], easy["attempts"], easy["trail.track"], easy["trail.outcome"]) == (
        "", 0, ["slm"], ["answered"])
    assert decision(hard) == ("escalated", "baseline-length", pytest.approx(13 / 400), 1.0)
    assert (hard["upstream"], hard["attempts"], hard["trail.track"], hard["trail.upstream"]) == (
        "default", 1, ["slm", "llm"], ["", "default"])  # the upstream's configured name, never its URL
    assert hard["trail.outcome"][0].startswith("low confidence 0.00 < 0.50"), hard
    assert hard["trail.outcome"][1] == "answered" and hard["trail.model"][1] == hard["model"] != ""
    assert decision(long) == ("llm", "baseline-length", 2.0, 1.0)  # its answer budget twice over
    assert (long["upstream"], long["attempts"], long["trail.track"]) == ("default", 1, ["llm"])
    assert decision(again) == ("cache", "", None, None) and again["trail.track"] == []
    assert {(r["toTypeName(cost_usd)"], r["toTypeName(total_ms)"]) for r in by_id.values()} == {
        ("Decimal(18, 9)", "Float64")}
