"""Shadow evaluations into the real embedded ClickHouse (no broker): a replay never double
counts, a row ClickHouse refuses is a dead letter while the rest land, and the report reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.clickhouse import Database
from pipeline.report import collect
from pipeline.sink import SinkWriter
from tests.integration.test_sink_poison import TOPICS, Message, Opener, letters, opened  # noqa: F401
from topics.codec import encode
from topics.schemas import Evaluation
from topics.shadow import encode_evaluation

pytestmark = pytest.mark.integration

JUDGED = "SELECT count() FROM pointsman.evaluations FINAL"


@pytest.fixture()
def db(opened: Opener, tmp_path: Path) -> Database:  # noqa: F811 (opened: the fixture)
    return opened(tmp_path / "clickhouse")


def evaluation(qid: str, **fields: object) -> Evaluation:
    base: dict[str, object] = dict(
        query_id=qid, tenant="acme", route="slm", judge="exact", score=1.0, fingerprint=f"fp-{qid}",
        served_model="smol", shadow_model="gpt", served_cost_usd=1e-6, shadow_cost_usd=1e-4,
        question=f"question {qid}", served_answer="4", shadow_answer="4", submitted_at=1.7e9,
        evaluated_at=1.7e9 + 5)
    return Evaluation(**{**base, **fields})  # type: ignore[arg-type]


def write(db: Database, items: list[Evaluation | bytes], start: int = 0) -> None:
    values = [i if isinstance(i, bytes) else encode_evaluation(i) for i in items]
    SinkWriter(db, TOPICS)([Message(TOPICS.evaluations, v, start + n) for n, v in enumerate(values)])


def test_a_replayed_evaluation_counts_once_and_the_report_shows_quality_and_shadow_cost(
        db: Database) -> None:
    batch = [evaluation("a"), evaluation("b", score=0.0),
             evaluation("c", route="semantic_cache", tenant="globex", served_cost_usd=0.0,
                        similarity=0.91, source_query_id="a", score=0.5)]
    write(db, batch)
    # the shadow ran again after a crash: a later evaluation of the same query replaces it
    write(db, [evaluation("a", score=0.0, evaluated_at=1.7e9 + 9)], start=10)
    assert db.query("SELECT count() FROM pointsman.evaluations")[1][0][0] == 4  # all written ...
    assert db.query(JUDGED)[1][0][0] == 3  # ... and each query judged once
    rows = {r["route"]: r for r in collect(db)["evaluations"]}
    assert rows["slm"]["judged"] == 2 and rows["slm"]["mean_score"] == 0.0
    assert rows["slm"]["disagreed"] == 2 and rows["slm"]["shadow_cost_usd"] == pytest.approx(2e-4)
    assert rows["semantic_cache"]["tenant"] == "globex" and rows["semantic_cache"]["mean_score"] == 0.5
    stored = db.query("SELECT similarity, source_query_id, question FROM pointsman.evaluations "
                      "FINAL WHERE query_id = 'c'")[1][0]
    assert stored[0] == pytest.approx(0.91) and stored[1:] == ("a", "question c")


def test_a_refused_or_undecodable_evaluation_is_a_dead_letter_and_the_rest_land(db: Database) -> None:
    write(db, [evaluation("ok"), evaluation("neg", shadow_prompt_tokens=-1), b"not json",
               encode(evaluation("late", submitted_at=1e20))])
    assert db.query("SELECT query_id FROM pointsman.evaluations FINAL")[1] == [("ok",)]
    reasons = letters(db)
    assert "ClickHouse refused" in reasons["neg"] and "cannot make a row" in reasons["late"]
    assert db.query("SELECT count() FROM pointsman.dead_letters FINAL "
                    "WHERE reason LIKE 'sink: undecodable%'")[1][0][0] == 1
