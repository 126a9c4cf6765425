"""Exploration: near misses of the semantic cache are judged by a shadow, never served."""

from __future__ import annotations

import json

from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import FixedPolicy
from pipeline.semantic.cache import SemanticCache, SemanticSettings
from pipeline.semantic.embedders import make_embedder
from pipeline.sink import EVALUATION_COLUMNS, evaluation_row
from tests.unit.test_workers import TOPICS
from topics.codec import decode
from topics.schemas import Evaluation, Result, RouteRequest
from topics.shadow import encode_evaluation

SOURCE = "How do I cancel my subscription?"
PARAPHRASE = "Cancel subscription please"  # static cosine ~0.899 to SOURCE, no guard conflict
FAR = "What time does the store open?"  # nowhere near SOURCE


def router(explore_rate: float, band: float = 0.05) -> RouterCore:
    semantic = SemanticCache(make_embedder("static"), None,
                             SemanticSettings(threshold=0.90, explore_band=band))
    core = RouterCore(TOPICS, FixedPolicy("slm"), ExactCache(ttl_s=60), clock=lambda: 1002.0,
                      semantic=semantic, explore_rate=explore_rate)
    first = core.route_one(message("src", SOURCE, 0), 1000.0)
    source = decode(first.value, RouteRequest)
    core.learn([Result(query_id="src", tenant="acme", route="llm", answer="Settings > Plan > Cancel",
                       model="m", fingerprint=source.fingerprint, completed_at=1001.0,
                       query=source.query)])
    return core


def message(qid: str, text: str, offset: int) -> Incoming:
    value = json.dumps({"id": qid, "text": text, "tenant": "acme"}).encode()
    return Incoming(TOPICS.queries, 0, offset, 1000.0, None, value)


def test_a_near_miss_is_routed_fresh_and_its_candidate_judged_by_a_shadow() -> None:
    out = router(1.0).route_batch([message("q2", PARAPHRASE, 1)], 1002.0)
    assert out[0].topic == TOPICS.route_slm  # the user gets a fresh answer, not the candidate
    assert len(out) == 2 and out[1].topic == TOPICS.route_shadow
    shadow = decode(out[1].value, RouteRequest)
    served = shadow.shadow_of
    assert served is not None and served.route == "semantic_near_miss"
    assert served.answer == "Settings > Plan > Cancel" and served.source_query_id == "src"
    assert served.similarity is not None and 0.85 <= served.similarity < 0.90


def test_no_exploration_without_a_rate_a_band_or_a_near_candidate() -> None:
    assert len(router(0.0).route_batch([message("q2", PARAPHRASE, 1)], 1002.0)) == 1
    assert len(router(1.0, band=0.0).route_batch([message("q2", PARAPHRASE, 1)], 1002.0)) == 1
    assert len(router(1.0, band=0.0005).route_batch([message("q2", PARAPHRASE, 1)], 1002.0)) == 1
    far = router(1.0).route_batch([message("q3", FAR, 1)], 1002.0)
    assert len(far) == 1 and far[0].topic == TOPICS.route_slm


def test_a_near_miss_evaluation_travels_and_becomes_a_row() -> None:
    evaluation = Evaluation(query_id="q", tenant="acme", route="semantic_near_miss", judge="exact",
                            score=1.0, similarity=0.87)
    back = decode(encode_evaluation(evaluation), Evaluation)
    assert back.route == "semantic_near_miss"
    row = dict(zip(EVALUATION_COLUMNS, evaluation_row(back), strict=True))
    assert row["route"] == "semantic_near_miss"
