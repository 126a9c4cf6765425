"""Shadow evaluations into the real embedded ClickHouse (no broker): a replay never double
counts, a row ClickHouse refuses is a dead letter while the rest land, and the report reads them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from infra.clickhouse import Database, apply_retention, migrate, retention_days
from pipeline.report import collect
from pipeline.sink import EVALUATION_COLUMNS, SinkWriter, evaluation_row
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
    write(db, [evaluation("rich", shadow_cost_usd=2e9)], start=10)
    assert "shadow_cost_usd 2000000000.0 is out of range" in letters(db)["rich"]
    assert db.query("SELECT count() FROM pointsman.dead_letters FINAL "
                    "WHERE reason LIKE 'sink: undecodable%'")[1][0][0] == 1


COSTS = ("SELECT query_id, served_cost_usd, shadow_cost_usd, judge_cost_usd "
         "FROM pointsman.evaluations ORDER BY query_id")


def test_a_database_at_008_gets_decimal_evaluation_costs_in_place_without_loss(
        opened: Opener, tmp_path: Path) -> None:  # noqa: F811 (opened: the fixture)
    database = opened(tmp_path / "clickhouse", upto="008_decisions_upstreams_decimal_cost.sql")
    apply_retention(database, 30)  # a retention setting other than the default: it must survive
    noisy = [0.1 + 0.2, 0.000299999999999, 0.12345678951, 1e-10, 7 * 0.15e-6]
    old = [evaluation(f"e{i}", served_cost_usd=cost, shadow_cost_usd=cost * 3, judge_cost_usd=cost / 2,
                      submitted_at=1.7e9 + i * 86_400) for i, cost in enumerate(noisy)]
    first = EVALUATION_COLUMNS.index("served_cost_usd")  # then shadow_cost_usd, judge_cost_usd
    costs = slice(first, first + 3)
    rows = []
    for e in old:  # as a sink before 009 wrote them: the floats as they were
        row = evaluation_row(e)
        row[costs] = [e.served_cost_usd, e.shadow_cost_usd, e.judge_cost_usd]
        rows.append(row)
    database.insert("pointsman.evaluations", rows, EVALUATION_COLUMNS)
    assert database.query(COSTS)[1][0][1] == 0.1 + 0.2  # the noise 009 takes out
    others = [c for c in EVALUATION_COLUMNS if not c.endswith("_cost_usd")] + ["inserted_at"]
    every = f"SELECT {', '.join(others)} FROM pointsman.evaluations ORDER BY query_id"
    before = database.query(every)[1]

    assert migrate(database.client) == ["009_evaluations_decimal_cost.sql"]
    # a crash after the swap, before the old table was dropped, then the rerun: the old table is
    # left under the copy's name (here with a row that must not come back)
    database.command("CREATE TABLE pointsman.evaluations_rebuild AS pointsman.evaluations")
    database.command("INSERT INTO pointsman.evaluations_rebuild (query_id, submitted_at, evaluated_at) "
                     "VALUES ('stale', now64(3), now64(3))")
    database.command("DELETE FROM pointsman.schema_migrations WHERE name >= '009'")
    assert migrate(database.client) == ["009_evaluations_decimal_cost.sql"]
    assert migrate(database.client) == []

    assert database.query(every)[1] == before  # every other value of every row, untouched
    nine = [Decimal(repr(round(v, 9))) for v in noisy]
    assert database.query(COSTS)[1] == [
        (f"e{i}", cost, Decimal(repr(round(v * 3, 9))), Decimal(repr(round(v / 2, 9))))
        for i, (cost, v) in enumerate(zip(nine, noisy, strict=True))]
    assert database.query("SELECT sum(served_cost_usd) FROM pointsman.evaluations")[1] == [(sum(nine),)]
    assert retention_days(database, "evaluations", "question") == 30
    # the sink writes the new type: a cost computed with float noise lands as its nine places
    write(database, [evaluation("new", served_cost_usd=0.1 + 0.2, submitted_at=1.8e9)])
    assert database.query("SELECT served_cost_usd FROM pointsman.evaluations "
                          "WHERE query_id = 'new'")[1] == [(Decimal("0.3"),)]
