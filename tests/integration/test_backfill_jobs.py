"""Backfill jobs end to end against the real broker and ClickHouse: a named job follows its
answers, resumes where it stopped, never adds a row or a cost when run again, stops at its
budget and goes on with a higher one, and reads CSV, Parquet and SQL sources."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.backfill.convert import convert
from pipeline.backfill.inspect import job_status
from tests.harness import ROOT, Pipeline
from workers.llm_standin import StandinLLM, StandinServer

pytestmark = pytest.mark.integration

ROWS = "SELECT count() FROM pointsman.results"  # every insert, replays included: no FINAL


def write_jsonl(path: Path, queries: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(q) for q in queries] + list(extra_lines)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def status(pipeline: Pipeline, name: str) -> dict:
    """What `backfill status NAME --json` prints (the same function, without a process each)."""
    found = job_status(pipeline.reader(), name)
    return found if found is not None else {"status": "none", "answered": 0}


def settled(pipeline: Pipeline, name: str, *, total: int, timeout: float = 60) -> dict:
    """The job's status once the sink has stored its last state and every answer."""
    deadline = time.monotonic() + timeout
    while True:
        now = status(pipeline, name)
        done = now.get("status") in ("done", "budget") and now["answered"] >= total
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini"))
    yield server.start()
    server.stop()


def test_a_job_follows_its_answers_resumes_and_never_pays_twice(pipeline: Pipeline,
                                                                tmp_path: Path) -> None:
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "always-slm"
    pipeline.start("sink", "router", "slm")
    pipeline.reader()  # the sink's SQL endpoint is up: the CLI reads through it
    history = write_jsonl(tmp_path / "history.jsonl",
                          [{"text": f"historic question {i}", "max_tokens": 4,
                            "submitted_at": 1_500_000_000 + i * 86_400} for i in range(30)],
                          ("not json", json.dumps({"text": "no budget", "max_tokens": 0})))
    first = pipeline.cli("backfill", str(history), "--job", "hist", timeout=180)
    assert first.returncode == 0, first.stderr
    assert "this run sent 30," in first.stdout and "30 answered" in first.stdout, first.stdout
    settled(pipeline, "hist", total=30)
    printed = pipeline.cli("backfill", "status", "hist", "--json")
    assert printed.returncode == 0, printed.stderr
    job = json.loads(printed.stdout)
    assert (job["status"], job["total"], job["answered"], job["invalid"]) == ("done", 32, 30, 2)
    assert job["routes"] == {"slm": 30} and job["cost_usd"] > 0
    letters = pipeline.reader().query(
        "SELECT reason FROM pointsman.dead_letters FINAL WHERE key LIKE 'hist:%' ORDER BY offset")[1]
    assert [r[0] for r in letters] == [
        f"backfill job hist: {history} row 31: not JSON; not sent",
        f"backfill job hist: {history} row 32: max_tokens 0 out of range 1-4096; not sent"]
    stored = pipeline.reader().query(
        "SELECT query_id, lane, job, prompt, toUnixTimestamp(submitted_at) FROM pointsman.results "
        "FINAL WHERE query_id = 'hist-3'")[1]
    # row 3 of the file: its default id, its lane and job, its prompt and its true submission time
    assert [list(r) for r in stored] == [["hist-3", "backfill", "hist", "historic question 2",
                                          1_500_000_000 + 2 * 86_400]]

    rows, cost = pipeline.count(ROWS), job["cost_usd"]
    again = pipeline.cli("backfill", str(history), "--job", "hist", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "this run sent 0," in again.stdout, again.stdout
    time.sleep(2)  # anything it had sent would be stored by now (the sink flushes every 0.5 s)
    assert pipeline.count(ROWS) == rows
    assert status(pipeline, "hist")["cost_usd"] == pytest.approx(cost, rel=1e-9)  # sums in any order

    # interrupted mid-way (a slow rate), then the same command again: every row once
    slow = write_jsonl(tmp_path / "slow.jsonl", [{"text": f"slow question {i}", "max_tokens": 4}
                                                 for i in range(24)])
    command = [sys.executable, "-m", "pipeline.cli", "backfill", str(slow), "--rate", "1"]
    proc = subprocess.Popen(command, env=pipeline.env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while status(pipeline, "slow").get("next_row", 0) < 2:  # its checkpoint says it is sending
        assert time.monotonic() < deadline, "the slow job sent nothing"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    paused = settled(pipeline, "slow", total=24, timeout=5)
    assert paused["status"] == "paused" and 2 <= paused["next_row"] < 24, paused
    resumed = pipeline.cli("backfill", str(slow), timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"this run sent {24 - paused['next_row']}," in resumed.stdout, resumed.stdout
    job = settled(pipeline, "slow", total=24)
    assert (job["status"], job["answered"]) == ("done", 24)
    time.sleep(2)
    assert pipeline.count("SELECT count() FROM pointsman.results WHERE job = 'slow'") == 24


def test_the_budget_stops_the_job_and_a_higher_one_resumes_it(pipeline: Pipeline,
                                                             upstream: StandinServer,
                                                             tmp_path: Path) -> None:
    pipeline.env.update(POINTSMAN_ROUTING_POLICY="always-llm", POINTSMAN_LLM_BASE_URL=upstream.base_url)
    pipeline.start("sink", "router", "llm")
    pipeline.reader()
    queries = write_jsonl(tmp_path / "spend.jsonl",
                          [{"text": f"question number {i} about something", "max_tokens": 16}
                           for i in range(40)])
    # what one stand-in answer costs, measured by a one-query job first
    probe = write_jsonl(tmp_path / "probe.jsonl", [{"text": "question number 99 about something",
                                                    "max_tokens": 16}])
    assert pipeline.cli("backfill", str(probe), timeout=120).returncode == 0
    one = settled(pipeline, "probe", total=1)["cost_usd"]
    assert one > 0
    budget = 8.5 * one
    stopped = pipeline.cli("backfill", str(queries), "--budget-usd", f"{budget:.12f}", timeout=120)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "stopped at its budget" in stopped.stdout
    job = settled(pipeline, "spend", total=9)
    assert job["status"] == "budget"
    assert budget <= job["cost_usd"] <= budget + 2 * one, job  # stops at it, at most an answer past
    assert 9 <= job["answered"] < 40
    # live traffic is not stopped by a job's budget
    live = pipeline.cli("produce", "a live question after the budget", "--id", "live-1", "--max-tokens", "4")
    assert live.returncode == 0, live.stderr
    live_sql = "SELECT count() FROM pointsman.results FINAL WHERE query_id = 'live-1'"
    assert pipeline.wait_until(live_sql, 1) == 1

    more = pipeline.cli("backfill", str(queries), "--budget-usd", "10", timeout=120)
    assert more.returncode == 0, more.stdout + more.stderr
    job = settled(pipeline, "spend", total=40)
    assert (job["status"], job["answered"]) == ("done", 40)
    assert job["cost_usd"] == pytest.approx(40 * one, rel=0.05)  # nothing paid twice
    time.sleep(2)
    assert pipeline.count("SELECT count() FROM pointsman.results WHERE job = 'spend'") == 40


def test_csv_parquet_and_sql_sources_and_export(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "always-slm"
    pipeline.start("sink", "router", "slm")
    pipeline.reader()  # the sink's SQL endpoint is up: the CLI reads through it
    table = tmp_path / "warehouse.csv"
    table.write_text("query_id,tenant,prompt,max_tokens,region\n"
                     + "".join(f"w{i},acme,warehouse question {i},4,eu\n" for i in range(8))
                     + "w8,acme,a bad row,many,eu\n")
    out = pipeline.cli("backfill", str(table), "--job", "wh", timeout=120)
    assert out.returncode == 0, out.stderr
    job = settled(pipeline, "wh", total=8)
    assert (job["answered"], job["invalid"]) == (8, 1)
    stored = pipeline.reader().query("SELECT tenant, metadata['region'] FROM pointsman.results FINAL "
                                     "WHERE job = 'wh' AND query_id = 'w3'")[1]
    assert [list(r) for r in stored] == [["acme", "eu"]]
    bad = pipeline.reader().query("SELECT reason FROM pointsman.dead_letters FINAL WHERE key = 'wh:9'")[1]
    assert bad and "row 9: max_tokens 'many' is not a number" in bad[0][0]

    staged = write_jsonl(tmp_path / "staged.jsonl", [{"id": f"p{i}", "text": f"parquet question {i}",
                                                      "max_tokens": 4} for i in range(6)])
    parquet = tmp_path / "history.parquet"
    convert(staged, "JSONEachRow", parquet, "Parquet")
    out = pipeline.cli("backfill", str(parquet), timeout=120)
    assert out.returncode == 0, out.stderr
    assert settled(pipeline, "history", total=6)["answered"] == 6

    # last job's SLM answers again, afresh (never the cache), as a job of their own
    rerun = pipeline.cli("backfill", "--from-sql", "SELECT tenant, prompt AS text, max_tokens FROM "
                         "pointsman.results FINAL WHERE job = 'wh' ORDER BY query_id",
                         "--job", "rerun", "--no-cache", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    job = settled(pipeline, "rerun", total=8)
    assert job["answered"] == 8 and job["routes"] == {"slm": 8}, job

    exported = tmp_path / "rerun.parquet"
    out = pipeline.cli("backfill", "export", "rerun", "--format", "parquet", "--out", str(exported))
    assert out.returncode == 0, out.stderr
    back = tmp_path / "back.jsonl"
    convert(exported, "Parquet", back, "JSONEachRow")
    rows = [json.loads(line) for line in back.read_text().splitlines()]
    assert len(rows) == 8 and {r["job"] for r in rows} == {"rerun"}
    assert {r["prompt"] for r in rows} == {f"warehouse question {i}" for i in range(8)}
    listed = json.loads(pipeline.cli("backfill", "list", "--json").stdout)
    assert {j["name"] for j in listed} >= {"wh", "history", "rerun"}
