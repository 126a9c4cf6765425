"""The sink against the real embedded ClickHouse engine (no broker): rows that ClickHouse or its
client refuses are isolated and dead-lettered while every good row lands; backfilled history
keeps its answers; migrations upgrade an existing database in place; the data dir is private."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from infra.clickhouse import Database, apply_retention, connect, migrate, retention_days
from pipeline.sink import RESULT_COLUMNS, SinkWriter, dead_letter_row, result_row
from topics.codec import encode
from topics.errors import RetryableError
from topics.names import Topics
from topics.schemas import DeadLetter, Query, Result

pytestmark = pytest.mark.integration

TOPICS = Topics("p.")
FINAL_IDS = "SELECT query_id FROM pointsman.results FINAL ORDER BY query_id"
JAN_2016 = 1_451_606_400.0


class Message:
    """A consumed record as the sink sees it (topic, position, bytes, Kafka timestamp)."""

    def __init__(self, topic: str, value: bytes, offset: int, partition: int = 0) -> None:
        self._topic, self._value, self._offset, self._partition = topic, value, offset, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000 + self._offset


Opener = Callable[..., Database]


@pytest.fixture()
def opened() -> Iterator[Opener]:
    """Opens (and migrates) embedded databases; closes them all after the test, pass or fail:
    the engine takes one path per process, so the next test needs it freed."""
    databases: list[Database] = []

    def open_database(path: Path, upto: str | None = None) -> Database:
        client = connect(f"chdb://{path}")
        databases.append(Database(client))
        migrate(client, upto=upto)
        return databases[-1]

    yield open_database
    for database in databases:
        database.client.close()


@pytest.fixture()
def db(opened: Opener, tmp_path: Path) -> Database:
    return opened(tmp_path / "clickhouse")


def result(qid: str, **fields: object) -> Result:
    base: dict[str, object] = dict(query_id=qid, tenant="acme", route="slm", model="m",
                                   answer=f"answer {qid}", fingerprint=f"fp-{qid}",
                                   submitted_at=1.7e9, completed_at=1.7e9 + 1)
    return Result(**{**base, **fields})  # type: ignore[arg-type]


def messages(results: list[Result], start: int = 0) -> list[Message]:
    return [Message(TOPICS.results, encode(r), start + i) for i, r in enumerate(results)]


def ids(db: Database, sql: str = FINAL_IDS) -> list[str]:
    return [row[0] for row in db.query(sql)[1]]


def letters(db: Database) -> dict[str, str]:
    return dict(db.query("SELECT query_id, reason FROM pointsman.dead_letters FINAL")[1])


def test_token_counts_beyond_uint32_are_dead_lettered_with_the_field_named(db: Database) -> None:
    poison = [result("neg", prompt_tokens=-1), result("big", completion_tokens=2 ** 32 + 5)]
    good = [result(f"g{i}") for i in range(20)]
    SinkWriter(db, TOPICS)(messages(good[:7] + poison[:1] + good[7:15] + poison[1:] + good[15:]))
    assert ids(db) == sorted(r.query_id for r in good)
    reasons = letters(db)
    assert set(reasons) == {"neg", "big"}
    assert reasons["neg"] == "sink: cannot make a row: prompt_tokens -1 is out of range (0 to 4294967295)"
    assert "completion_tokens" in reasons["big"] and "4294967295" in reasons["big"]
    raw = db.query("SELECT raw FROM pointsman.dead_letters FINAL WHERE query_id = 'big'")[1][0][0]
    assert '"completion_tokens":4294967301' in raw  # the message as it came, to fix and replay


def test_a_submitted_at_of_1e20_is_a_dead_letter_and_the_rest_lands(db: Database) -> None:
    batch = [result("a"), result("far", submitted_at=1e20), result("b")]
    SinkWriter(db, TOPICS)(messages(batch))
    assert ids(db) == ["a", "b"]
    assert letters(db)["far"].startswith("sink: cannot make a row: ")


def test_a_batch_spanning_130_monthly_partitions_lands_whole(db: Database) -> None:
    month = 31 * 86_400
    history = [result(f"h{i:03}", submitted_at=JAN_2016 + i * month,
                      completed_at=JAN_2016 + i * month + 2) for i in range(130)]
    SinkWriter(db, TOPICS)(messages(history))
    assert ids(db) == [r.query_id for r in history]
    assert db.query("SELECT uniqExact(partition) FROM system.parts WHERE database = 'pointsman' "
                    "AND table = 'results' AND active")[1][0][0] == 130
    assert letters(db) == {}


def test_history_from_2016_keeps_its_answer_and_its_submission_time(db: Database) -> None:
    SinkWriter(db, TOPICS)(messages([result("old", submitted_at=JAN_2016 + 3600.5,
                                            completed_at=JAN_2016 + 3700)]))
    db.command("OPTIMIZE TABLE pointsman.results FINAL")  # TTLs apply at merges too
    answer, submitted = db.query(
        "SELECT answer, toString(submitted_at) FROM pointsman.results FINAL")[1][0]
    assert answer == "answer old" and submitted == "2016-01-01 01:00:00.500"


def test_the_good_rows_of_a_heavily_poisoned_batch_all_land(db: Database) -> None:
    batch, poison = [], set()
    for i in range(600):
        if i % 37 == 5:
            batch.append(result(f"x{i:03}", prompt_tokens=-i))
            poison.add(f"x{i:03}")
        elif i % 53 == 7:
            batch.append(result(f"x{i:03}", completed_at=-1e19))
            poison.add(f"x{i:03}")
        else:
            batch.append(result(f"x{i:03}"))
    writer = SinkWriter(db, TOPICS)
    sent = [*messages(batch), Message(TOPICS.results, b"\x00junk", 600)]
    writer(sent)
    writer(sent)  # a replay (a crash before the commit): nothing doubles
    good = sorted(r.query_id for r in batch if r.query_id not in poison)
    assert ids(db) == good
    assert db.query("SELECT count() FROM pointsman.results FINAL")[1][0][0] == len(good)
    assert set(letters(db)) == poison | {""}
    assert db.query("SELECT count() FROM pointsman.dead_letters FINAL")[1][0][0] == len(poison) + 1


def test_a_dead_letter_clickhouse_refuses_is_kept_as_a_safe_one(db: Database) -> None:
    bad = DeadLetter(reason="llm failed", raw='{"text":"q"}', source_topic="p.route.llm",
                     partition=2 ** 40, query_id="q9", tenant="acme", failed_at=1.0)
    far = DeadLetter(reason="llm failed", raw="x", source_topic="p.route.llm", query_id="q8",
                     tenant="acme", failed_at=1e20)
    good = DeadLetter(reason="llm failed", raw="y", source_topic="p.route.llm", query_id="q7",
                      tenant="acme", failed_at=1.0)
    SinkWriter(db, TOPICS)([Message(TOPICS.deadletter, encode(d), i) for i, d in
                            enumerate([bad, far, good])])
    rows = dict(db.query("SELECT query_id, letter_id FROM pointsman.dead_letters FINAL")[1])
    assert rows["q7"].startswith("p.route.llm:acme:q7:")
    assert rows["q9"] == f"{TOPICS.deadletter}:0:0" and rows["q8"] == f"{TOPICS.deadletter}:0:1"
    assert "partition" in letters(db)["q9"]


def test_an_unreachable_database_retries_the_batch_and_dead_letters_nothing(db: Database) -> None:
    database = db
    writer = SinkWriter(database, TOPICS)
    writer(messages([result("neg", prompt_tokens=-1), result("ok")]))
    assert ids(database) == ["ok"] and set(letters(database)) == {"neg"}
    database.client.close()  # gone: the probe fails too, so this is no poison row
    with pytest.raises(RetryableError):
        writer(messages([result("neg2", prompt_tokens=-1), result("ok2")], start=10))
    assert writer.dead_lettered == 1


def test_two_tenants_failing_under_one_id_keep_two_letters(db: Database) -> None:
    def failure(tenant: str) -> DeadLetter:
        return DeadLetter(reason="llm failed", raw='{"text":"same"}', source_topic="p.route.llm",
                          query_id="q1", tenant=tenant, failed_at=1.7e9)

    sent = [Message(TOPICS.deadletter, encode(failure(t)), i) for i, t in
            enumerate(["acme", "globex", "acme"])]
    SinkWriter(db, TOPICS)(sent)
    assert sorted(r[0] for r in db.query(
        "SELECT tenant FROM pointsman.dead_letters FINAL")[1]) == ["acme", "globex"]


def test_one_id_with_two_texts_keeps_both_answers_and_a_replay_still_collapses(db: Database) -> None:
    now = time.time()
    first = result("q1", fingerprint="fp-one", answer="one", submitted_at=now, completed_at=now)
    second = result("q1", fingerprint="fp-two", answer="two", submitted_at=now, completed_at=now)
    writer = SinkWriter(db, TOPICS)
    writer(messages([first, second]))
    writer(messages([first, second]))
    db.command("OPTIMIZE TABLE pointsman.results FINAL")
    assert sorted(r[0] for r in db.query("SELECT answer FROM pointsman.results")[1]) == ["one", "two"]


def test_a_database_made_by_001_upgrades_in_place_without_loss(opened: Opener, tmp_path: Path) -> None:
    database = opened(tmp_path / "clickhouse", upto="001_init.sql")
    now = time.time()  # recent rows: 001's TTL has not erased their bodies yet
    old = [result(f"r{i}", submitted_at=now - i * 2 * 86_400, completed_at=now) for i in range(30)]
    insert_legacy(database, old)
    letter = DeadLetter(reason="why", raw="body", source_topic="p.q", partition=0, offset=3,
                        failed_at=now)
    database.insert("pointsman.dead_letters", [dead_letter_row(letter)],
                    ["letter_id", "source_topic", "partition", "offset", "reason", "raw", "key",
                     "query_id", "tenant", "failed_at"])
    before = database.query("SELECT query_id, answer, submitted_at, inserted_at "
                            "FROM pointsman.results ORDER BY query_id")[1]
    assert migrate(database.client) == ["002_ttl_from_inserted_at.sql",
                                        "003_results_key_with_fingerprint.sql",
                                        "004_counterfactual_cost.sql", "005_evaluations.sql",
                                        "006_lanes_jobs_prompts.sql", "007_rollup_from_final.sql",
                                        *MIGRATIONS_FROM_008]
    assert migrate(database.client) == []  # a second run is a no-op
    after = database.query("SELECT query_id, answer, submitted_at, inserted_at "
                           "FROM pointsman.results ORDER BY query_id")[1]
    assert after == before and all(row[1] for row in after)
    assert database.query("SELECT raw FROM pointsman.dead_letters")[1] == [("body",)]
    key = database.query("SELECT sorting_key FROM system.tables "
                         "WHERE database = 'pointsman' AND name = 'results'")[1][0][0]
    assert key == "tenant, toDate(submitted_at), query_id, fingerprint"
    assert retention_days(database, "results", "answer") == 90
    assert retention_days(database, "dead_letters", "raw") == 90
    tables = {r[0] for r in database.query("SHOW TABLES FROM pointsman")[1]}
    assert "results_rebuild" not in tables and "results_per_minute_mv" in tables
    # the per-minute rollup is computed from the swapped-in table, old rows included
    SinkWriter(database, TOPICS)(messages([result("new", submitted_at=1.8e9)]))
    refresh_rollup(database)
    assert database.query("SELECT sum(queries) FROM pointsman.results_per_minute")[1] == [(31,)]
    assert database.query("SELECT queries FROM pointsman.results_per_minute "
                          "WHERE minute = toStartOfMinute(toDateTime(1800000000))")[1] == [(1,)]


def refresh_rollup(database: Database) -> None:
    """What the rollup's refresh does every minute, now."""
    database.command("SYSTEM REFRESH VIEW pointsman.results_per_minute_mv")
    database.command("SYSTEM WAIT VIEW pointsman.results_per_minute_mv")


MIGRATIONS_FROM_008 = ["008_decisions_upstreams_decimal_cost.sql", "009_evaluations_decimal_cost.sql"]

# the results columns that 008 and 006_lanes_jobs_prompts.sql add, and those before them and 004
COLUMNS_008 = ("policy", "score", "threshold", "upstream", "attempts", "trail")
COLUMNS_007 = [c for c in RESULT_COLUMNS if c not in COLUMNS_008]
COLUMNS_006 = ("lane", "job", "prompt", "messages", "max_tokens", "temperature", "metadata")
COLUMNS_005 = [c for c in COLUMNS_007 if c not in COLUMNS_006]
LEGACY_COLUMNS = [c for c in COLUMNS_005 if c not in ("all_llm_cost_usd", "slm_cost_usd")]


def insert_legacy(database: Database, rows: list[Result], columns: list[str] = LEGACY_COLUMNS) -> None:
    """Rows as a sink before migration 004 (or another, by its columns) wrote them: costs as the
    floats they were (before 008 nothing rounded them)."""
    raw = {"cost_usd": lambda r: r.cost_usd, "all_llm_cost_usd": lambda r: r.all_llm_cost_usd,
           "slm_cost_usd": lambda r: r.slm_cost_usd}
    values = [[raw[c](r) if c in raw else v
               for c, v in zip(RESULT_COLUMNS, result_row(r), strict=True) if c in columns]
              for r in rows]
    database.insert("pointsman.results", values, columns)


def test_a_database_at_003_gains_the_cost_columns_in_place_without_loss(
        opened: Opener, tmp_path: Path) -> None:
    database = opened(tmp_path / "clickhouse", upto="003_results_key_with_fingerprint.sql")
    now = time.time()
    old = [result(f"r{i}", submitted_at=now - i * 3_600, completed_at=now, cost_usd=0.001 * i,
                  prompt_tokens=i, completion_tokens=2 * i) for i in range(20)]
    insert_legacy(database, old)
    every = ("SELECT query_id, tenant, route, model, answer, prompt_tokens, completion_tokens, "
             "cost_usd, fingerprint, submitted_at, completed_at, inserted_at "
             "FROM pointsman.results ORDER BY query_id")
    before = database.query(every)[1]
    upto = "007_rollup_from_final.sql"  # 008 retypes the costs: its own test compares by value
    assert migrate(database.client, upto)[:1] == ["004_counterfactual_cost.sql"]
    assert migrate(database.client, upto) == []  # recorded: a restart does not run it again
    # a crash after its statements ran but before it was recorded (so none after it ran either):
    # the rerun must be harmless
    database.command("DELETE FROM pointsman.schema_migrations WHERE name >= '004'")
    assert migrate(database.client, upto) == ["004_counterfactual_cost.sql", "005_evaluations.sql",
                                              "006_lanes_jobs_prompts.sql", upto]
    assert database.query(every)[1] == before  # every old row, every value, untouched
    assert migrate(database.client) == MIGRATIONS_FROM_008
    assert database.query("SELECT count(), sum(all_llm_cost_usd), sum(slm_cost_usd) "
                          "FROM pointsman.results")[1] == [(20, 0.0, 0.0)]  # old rows: unknown
    # new rows land with both columns, and the per-minute rollup sums the counterfactual
    fresh = result("new", submitted_at=1.8e9, cost_usd=0.0001, all_llm_cost_usd=0.002,
                   slm_cost_usd=0.0001)
    SinkWriter(database, TOPICS)(messages([fresh]))
    assert database.query("SELECT all_llm_cost_usd, slm_cost_usd FROM pointsman.results "
                          "WHERE query_id = 'new'")[1] == [(Decimal("0.002"), Decimal("0.0001"))]
    refresh_rollup(database)
    assert database.query(
        "SELECT queries, cost_usd, all_llm_cost_usd FROM pointsman.results_per_minute "
        "WHERE minute = toStartOfMinute(toDateTime(1800000000))")[1] == [
            (1, Decimal("0.0001"), Decimal("0.002"))]
    assert database.query("SELECT sum(queries), sum(cost_usd) FROM "
                          "pointsman.results_per_minute")[1] == [(21, Decimal("0.1901"))]


def test_a_replayed_batch_never_changes_the_rollup(db: Database) -> None:
    rows = [result(f"q{i}", tenant=("acme", "globex")[i % 2], route=("slm", "llm", "cache")[i % 3],
                   submitted_at=1.7e9 + 7 * i, completed_at=1.7e9 + 7 * i + 1, cost_usd=0.001 * i,
                   all_llm_cost_usd=0.002, prompt_tokens=i, completion_tokens=1) for i in range(60)]
    for r in rows:
        r.timings.total_ms = 10.0 * r.prompt_tokens
    writer = SinkWriter(db, TOPICS)
    writer(messages(rows))
    per_minute = ("SELECT minute, tenant, route, queries, tokens, round(cost_usd, 9), "
                  "round(all_llm_cost_usd, 9), p50_ms, p99_ms FROM pointsman.results_per_minute "
                  "ORDER BY minute, tenant, route")
    refresh_rollup(db)
    first = db.query(per_minute)[1]
    writer(messages(rows[10:50], start=10))  # the sink replays a stretch of the results topic
    assert db.query("SELECT count() FROM pointsman.results")[1][0][0] > 60  # really written twice
    refresh_rollup(db)
    assert db.query(per_minute)[1] == first  # ... and the rollup is what it was
    # and it is results FINAL rolled up
    assert db.query(
        "SELECT sum(queries), sum(tokens), round(sum(cost_usd), 9) FROM pointsman.results_per_minute"
    )[1] == db.query("SELECT count(), sum(prompt_tokens + completion_tokens), round(sum(cost_usd), 9) "
                     "FROM pointsman.results FINAL")[1]


def test_a_database_at_005_gains_lanes_jobs_and_prompts_in_place_without_loss(
        opened: Opener, tmp_path: Path) -> None:
    database = opened(tmp_path / "clickhouse", upto="005_evaluations.sql")
    now = time.time()
    old = [result(f"r{i}", submitted_at=now - i * 3_600, completed_at=now, cost_usd=0.001 * i,
                  all_llm_cost_usd=0.01 * i) for i in range(20)]
    insert_legacy(database, old, COLUMNS_005)
    every = f"SELECT {', '.join(COLUMNS_005)}, inserted_at FROM pointsman.results ORDER BY query_id"
    before = database.query(every)[1]
    upto = "007_rollup_from_final.sql"  # 008 retypes the costs: its own test compares by value
    assert migrate(database.client, upto) == ["006_lanes_jobs_prompts.sql", upto]
    # a crash after its statements ran but before it was recorded: the rerun must be harmless
    database.command("DELETE FROM pointsman.schema_migrations WHERE name >= '006'")
    assert migrate(database.client, upto) == ["006_lanes_jobs_prompts.sql", upto]
    assert database.query(every)[1] == before  # every old row, every value, untouched
    assert migrate(database.client) == MIGRATIONS_FROM_008
    assert database.query(  # old rows read as live traffic of no job, their prompt unknown
        "SELECT DISTINCT lane, job, prompt, messages, max_tokens, length(metadata) "
        "FROM pointsman.results")[1] == [("live", "", "", "", 0, 0)]
    assert retention_days(database, "results", "prompt") == 90
    fresh = result("new", submitted_at=now, lane="backfill", job="hist",
                   query=Query(text="what was asked", max_tokens=7, metadata={"k": "v"}, job="hist"))
    SinkWriter(database, TOPICS)(messages([fresh]))
    assert [list(r) for r in database.query(
        "SELECT lane, job, prompt, max_tokens, metadata FROM pointsman.results "
        "WHERE query_id = 'new'")[1]] == [["backfill", "hist", "what was asked", 7, {"k": "v"}]]


def test_the_report_computes_savings_per_route_and_in_total(db: Database) -> None:
    from pipeline.report import collect

    rows = [result("s1", route="slm", cost_usd=0.0001, all_llm_cost_usd=0.002, slm_cost_usd=0.0001),
            result("s2", route="slm", cost_usd=0.0001, all_llm_cost_usd=0.002, slm_cost_usd=0.0001),
            result("c1", route="cache", all_llm_cost_usd=0.002),
            result("e1", route="escalated", cost_usd=0.0021, all_llm_cost_usd=0.002,
                   slm_cost_usd=0.0001),
            result("f1", route="llm", error="llm failed: 500")]  # no tokens, no counterfactual
    SinkWriter(db, TOPICS)(messages(rows))
    report = collect(db)
    routes = {r["route"]: r for r in report["routes"]}
    assert routes["slm"]["all_llm_cost_usd"] == 0.004 and routes["slm"]["savings"] == 0.95
    assert routes["cache"]["savings"] == 1.0
    assert routes["escalated"]["savings"] == -0.05  # the SLM attempt made it dearer than all-LLM
    assert routes["llm"]["savings"] is None  # nothing to compare with
    totals = report["totals"]
    assert totals["all_llm_cost_usd"] == 0.008 and totals["savings"] == round(1 - 0.0023 / 0.008, 4)


def test_the_report_names_the_costly_tenants_and_the_dead_letters_by_reason(db: Database) -> None:
    from rich.console import Console

    from pipeline.report import collect, render

    SinkWriter(db, TOPICS)(messages([
        result("a1", tenant="acme", cost_usd=0.003, all_llm_cost_usd=0.004),
        result("a2", tenant="acme", cost_usd=0.001, all_llm_cost_usd=0.004),
        result("g1", tenant="globex", cost_usd=0.0001, all_llm_cost_usd=0.002)]))
    letters = [DeadLetter(reason=reason, raw="x", source_topic="q", partition=0, offset=i,
                          failed_at=1.7e9)
               for i, reason in enumerate(["not JSON", "not JSON", "llm failed: 500 [bold]x[/bold]"])]
    db.insert("pointsman.dead_letters", [dead_letter_row(d) for d in letters],
              ["letter_id", "source_topic", "partition", "offset", "reason", "raw", "key",
               "query_id", "tenant", "failed_at"])
    report = collect(db)
    assert [(t["tenant"], t["queries"], t["savings"]) for t in report["tenants"]] == [
        ("acme", 2, 0.5), ("globex", 1, 0.95)]  # the costliest first
    assert [(d["kind"], d["letters"]) for d in report["dead_letters"]] == [("not JSON", 2),
                                                                          ("llm failed", 1)]
    console = Console(record=True, width=160)
    render(report, console)
    text = console.export_text()
    assert "The most costly tenants" in text and "llm failed: 500 [bold]x[/bold]" in text  # inert


def test_retention_is_a_setting_applied_only_when_it_differs(db: Database) -> None:
    assert apply_retention(db, 90) == []
    bodies = ["results.answer", "results.prompt", "results.messages", "dead_letters.raw",
              "evaluations.question",
              "evaluations.served_answer", "evaluations.shadow_answer"]
    assert apply_retention(db, 30) == bodies
    assert retention_days(db, "results", "answer") == 30
    assert retention_days(db, "evaluations", "shadow_answer") == 30
    assert apply_retention(db, 30) == []
    assert apply_retention(db, 0) == bodies
    assert retention_days(db, "dead_letters", "raw") is None  # kept forever
    ddl = db.query("SHOW CREATE TABLE pointsman.results")[1][0][0]
    assert "`answer` String CODEC(ZSTD(3))" in ddl  # the codec survives the change


def test_the_embedded_data_dir_is_private(opened: Opener, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    opened(fresh).client.close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    opened(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700


def test_a_database_at_007_is_rebuilt_with_decimal_costs_and_the_new_columns_without_loss(
        opened: Opener, tmp_path: Path) -> None:
    import numpy as np

    from topics.schemas import Step

    database = opened(tmp_path / "clickhouse", upto="007_rollup_from_final.sql")
    apply_retention(database, 30)  # a retention setting other than the default: it must survive
    now = time.time()
    # costs with float noise either side of their decimal, latencies a Float32 cannot hold exactly
    costs = [0.1 + 0.2, 0.000299999999999, 0.12345678951, 1e-10, 0.0003, 7 * 0.15e-6]
    old = [result(f"r{i}", submitted_at=now - i * 86_400, completed_at=now, cost_usd=cost,
                  all_llm_cost_usd=cost * 3, slm_cost_usd=cost / 2, route=("slm", "llm")[i % 2],
                  lane=("live", "backfill")[i % 2], job=("", "hist")[i % 2], confidence=0.5,
                  query=Query(text=f"asked {i}", max_tokens=9, metadata={"k": str(i)}),
                  route_reason=f"why {i}")
           for i, cost in enumerate(costs)]
    for i, r in enumerate(old):
        r.timings.queued_ms, r.timings.total_ms = 0.1 * (i + 1), 12.3 + 1000.7 * i
    insert_legacy(database, old, COLUMNS_007)
    kept = [c for c in COLUMNS_007 if c not in ("cost_usd", "all_llm_cost_usd", "slm_cost_usd")
            and not c.endswith("_ms")] + ["inserted_at"]
    every = f"SELECT {', '.join(kept)} FROM pointsman.results ORDER BY query_id"
    before = database.query(every)[1]
    money = ("SELECT cost_usd, all_llm_cost_usd, slm_cost_usd, queued_ms, routed_ms, wait_ms, "
             "inference_ms, total_ms FROM pointsman.results ORDER BY query_id")
    floats = database.query(money)[1]
    assert floats[0][0] == 0.1 + 0.2 and floats[0][-1] != 12.3  # the noise 008 takes out

    assert migrate(database.client) == MIGRATIONS_FROM_008
    # a crash after the swap, before the old table was dropped, then the rerun: the old table
    # is left under the copy's name (here with a row that must not come back)
    database.command("CREATE TABLE pointsman.results_rebuild AS pointsman.results")
    database.command("INSERT INTO pointsman.results_rebuild (query_id, submitted_at, completed_at) "
                     "VALUES ('stale', now64(3), now64(3))")
    database.command("DELETE FROM pointsman.schema_migrations WHERE name >= '008'")
    assert migrate(database.client) == MIGRATIONS_FROM_008
    assert migrate(database.client) == []

    assert database.query(every)[1] == before  # every other value of every old row, untouched
    usd = [Decimal(repr(round(v, 9))) for v in costs]  # each cost, rounded to its nine places
    for row, old_values, cost in zip(database.query(money)[1], floats, costs, strict=True):
        assert row[:3] == (Decimal(repr(round(cost, 9))), Decimal(repr(round(cost * 3, 9))),
                           Decimal(repr(round(cost / 2, 9))))
        # each latency is its Float32's shortest decimal: 12.3, not 12.300000190734863
        assert list(row[3:]) == [float(str(np.float32(v))) for v in old_values[3:]]
    assert database.query("SELECT sum(cost_usd) FROM pointsman.results")[1] == [(sum(usd),)]
    assert database.query("SELECT DISTINCT policy, score, threshold, upstream, attempts, trail "
                          "FROM pointsman.results")[1] == [("", None, None, "", 0, [])]
    types = dict(database.query("SELECT name, type FROM system.columns WHERE database = "
                                "'pointsman' AND table = 'results'")[1])
    assert {types[c] for c in ("cost_usd", "all_llm_cost_usd", "slm_cost_usd")} == {"Decimal(18, 9)"}
    assert {types[c] for c in COLUMNS_007 if c.endswith("_ms")} == {"Float64"}
    assert retention_days(database, "results", "answer") == 30
    assert retention_days(database, "results", "prompt") == 30
    assert "results_rebuild" not in {r[0] for r in database.query("SHOW TABLES FROM pointsman")[1]}

    # new rows carry the decision, the upstream, its attempts and the trail; the rollup is exact
    fresh = result("new", route="escalated", submitted_at=now, cost_usd=0.1, policy="learned",
                   score=0.71, threshold=0.6, upstream="backup", attempts=2, trail=(
                       Step("slm", "smol", outcome="low confidence 0.20 < 0.50"),
                       Step("llm", "gpt-4o-mini", "primary", "primary answered 503"),
                       Step("llm", "gpt-4o-mini", "backup", "answered")))
    SinkWriter(database, TOPICS)(messages([fresh, *(result(f"d{i}", cost_usd=0.1, submitted_at=now)
                                                    for i in range(9))]))
    assert [list(r) for r in database.query(
        "SELECT policy, score, threshold, upstream, attempts, trail.track, trail.upstream, "
        "trail.outcome FROM pointsman.results WHERE query_id = 'new'")[1]] == [[
            "learned", 0.71, 0.6, "backup", 2, ["slm", "llm", "llm"], ["", "primary", "backup"],
            ["low confidence 0.20 < 0.50", "primary answered 503", "answered"]]]
    assert database.query("SELECT sum(cost_usd) FROM pointsman.results WHERE query_id = 'new' "
                          "OR query_id LIKE 'd%'")[1] == [(Decimal("1"),)]  # 0.1 ten times: 1
    refresh_rollup(database)
    assert database.query("SELECT sum(cost_usd), toTypeName(sum(cost_usd)) FROM "
                          "pointsman.results_per_minute")[1] == [(sum(usd) + 1, "Decimal(38, 9)")]


def test_a_cost_is_stored_rounded_to_nine_places_not_cut(db: Database) -> None:
    # the client writes a float's repr cut after nine places: 0.000299999999999 would be 0.000299999
    SinkWriter(db, TOPICS)(messages([result("a", cost_usd=0.000299999999999),
                                     result("b", cost_usd=0.1 + 0.2, all_llm_cost_usd=0.0009999999999)]))
    assert db.query("SELECT cost_usd, all_llm_cost_usd FROM pointsman.results ORDER BY query_id")[1] == [
        (Decimal("0.0003"), Decimal("0")), (Decimal("0.3"), Decimal("0.001"))]
