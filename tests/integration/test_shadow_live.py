"""Shadow evaluation on the live pipeline (real broker, Faust router, real tiny SLM, sink into
embedded ClickHouse, the LLM track a local stand-in): with the shadow rate at 1, every answer
the SLM served and every semantic-cache hit has a judged row in pointsman.evaluations, and no
shadow answer ever reaches the user."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.roles import serve_llm, serve_slm, sized_for_standin
from tests.harness import ROOT, Pipeline
from tests.integration.test_pipeline import RESULTS, send
from tests.integration.test_slm_answered import ResultsSeen
from workers.llm_standin import StandinLLM, StandinServer
from workers.loop import StopFlag
from workers.slm.engine import SlmEngine

pytestmark = pytest.mark.integration

EVALUATIONS = "SELECT count() FROM pointsman.evaluations FINAL"
STANDIN_MODEL = "standin-shadow"
# the router with its shadow rate set directly (the CLI reads only the environment)
ROUTER = ("import dataclasses; from pipeline.config import Config; from pipeline.router import "
          "run_router; run_router(dataclasses.replace(Config.from_env().router(), shadow_rate=1.0))")


def query(qid: str, text: str, tenant: str = "acme") -> bytes:
    return json.dumps({"id": qid, "tenant": tenant, "text": text, "max_tokens": 6}).encode()


def start_router(pipeline: Pipeline) -> None:
    log = (pipeline.logs / "router.log").open("ab")
    pipeline.procs["router"] = subprocess.Popen([sys.executable, "-c", ROUTER], env=pipeline.env,
                                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def test_every_slm_answer_and_cache_hit_is_judged_and_no_shadow_reaches_the_user(
        pipeline: Pipeline, broker: str, tiny_model: Path) -> None:
    pipeline.env.update(POINTSMAN_ROUTING_POLICY="always-slm", POINTSMAN_SEMANTIC_CACHE="on")
    config = Config.from_env(pipeline.env)
    stop = StopFlag()
    standin = StandinServer(StandinLLM(model=STANDIN_MODEL)).start()  # echoes: "[stand-in] ..."
    slm_settings = dataclasses.replace(config.slm(), shadow_rate=1.0, answered_warmup_s=5)
    llm_settings = dataclasses.replace(sized_for_standin(config.llm(standin.base_url)),
                                       answered_warmup_s=5)
    workers = [
        threading.Thread(target=serve_slm, args=(slm_settings, stop, SlmEngine(tiny_model, threads=1)),
                         daemon=True),
        threading.Thread(target=serve_llm, args=(llm_settings, stop), daemon=True),
    ]
    for worker in workers:
        worker.start()
    pipeline.start("sink")
    start_router(pipeline)
    seen = ResultsSeen(broker, pipeline.topics)
    try:
        questions = ["what is the boiling point of water at sea level",
                     "name three primary colours", "how many legs does a spider have",
                     "translate good morning into french", "why do leaves change colour in autumn"]
        send(pipeline, broker, [query(f"q{i}", text) for i, text in enumerate(questions)])
        assert pipeline.wait_until(RESULTS, len(questions), timeout=180) == len(questions)
        time.sleep(3)  # the router learns the answers from the results topic
        # a reworded question (a semantic-cache hit) and a repeat (an exact hit, not shadowed)
        send(pipeline, broker, [query("para", "how many legs does a spider have please"),
                                query("again", questions[1])])
        total = len(questions) + 2
        assert pipeline.wait_until(RESULTS, total, timeout=120) == total
        routes = dict(pipeline.reader().query(
            "SELECT query_id, route FROM pointsman.results FINAL")[1])
        assert routes["again"] == "cache" and routes["para"] == "semantic_cache", routes
        judged_routes = {qid: route for qid, route in routes.items()
                         if route in ("slm", "semantic_cache")}
        assert sum(r == "slm" for r in judged_routes.values()) == len(questions)

        # a judged row for every SLM answer and every semantic-cache hit, and for nothing else
        assert pipeline.wait_until(EVALUATIONS, len(judged_routes), timeout=120) == len(judged_routes)
        time.sleep(2)  # nothing more arrives: an exact hit has no shadow
        columns, rows = pipeline.reader().query(
            "SELECT query_id, tenant, route, judge, score, served_model, shadow_model, "
            "served_cost_usd, shadow_cost_usd, similarity, source_query_id, fingerprint "
            "FROM pointsman.evaluations FINAL")
        evaluations = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
        assert {qid: e["route"] for qid, e in evaluations.items()} == judged_routes
        for e in evaluations.values():
            assert e["tenant"] == "acme" and e["judge"] and 0.0 <= e["score"] <= 1.0
            assert e["shadow_model"] == STANDIN_MODEL and e["shadow_cost_usd"] > 0 and e["fingerprint"]
        assert all(evaluations[f"q{i}"]["served_cost_usd"] > 0 for i in range(len(questions)))
        hit = evaluations["para"]
        assert hit["served_cost_usd"] == 0 and hit["similarity"] is not None
        assert hit["source_query_id"] == "q2"

        # no shadow answer reached the user: one result per query on the topic, none from the LLM
        seen.wait_for(set(routes))
        time.sleep(1)
        seen.wait_for(set(routes))
        per_id = Counter(r.query_id for r in seen.results)
        assert per_id == Counter({qid: 1 for qid in routes}), per_id
        assert not [r for r in seen.results if r.model == STANDIN_MODEL or "[stand-in]" in r.answer]
        assert pipeline.count("SELECT count() FROM pointsman.results") == total  # not even unmerged

        # the report shows judged quality per route and the shadow cost apart
        report = pipeline.cli("report", "--json")
        assert report.returncode == 0, report.stderr
        by_route = {row["route"]: row for row in json.loads(report.stdout)["evaluations"]}
        assert by_route["slm"]["judged"] == len(questions)
        assert by_route["semantic_cache"]["judged"] == 1
        assert float(by_route["slm"]["shadow_cost_usd"]) > 0
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        standin.stop()
        seen.consumer.close()
