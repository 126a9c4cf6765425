"""`pointsman bench sink`: sink ingest rows/s beside a raw clickhouse-connect insert, and the time
from a result produced to queryable.

One run, one local broker, one fresh embedded ClickHouse (chdb allows one engine path per
process, so the raw table lives in a second database of the same engine):
  sink       the real SinkWriter over run_overlapped_loop (the `pointsman run sink` code,
             in-process) consuming `--rows` pre-produced results: rows/s from the first batch
             handed to the writer to the last row stored (group join excluded), and the shares
             of that spent preparing batches (decode, checks) and storing them, which overlap
  raw        a plain insert of exactly those rows (the sink's columns, row lists built
             beforehand by result_row, 50k rows an insert) into a copy of the results schema
             by clickhouse-connect's row-oriented insert (Database.insert, the sink's
             INSERT_SETTINGS): the sink's path on a ClickHouse server
  raw json   the same results as their encoded messages, mapped by the engine
             (insert_result_messages, pipeline/sink_json.py): the embedded sink's insert,
             without the decode and range checks the sink runs first
  engine     the engine alone writing the same rows: INSERT … SELECT from in-memory copies of
             the chunks (filled unmeasured), no client code at all: the floor any sink on
             this engine pays, whatever its language
             The three go into copies of their own, taking turns insert by insert, with the
             garbage collector paused as the sink pauses it, each measured once the engine
             has no merge running (a merge of the parts an insert
             left runs on the engine's threads, which the process's CPU time counts)
  queryable  with the sink idle, single results produced at intervals; seconds from produce to
             `SELECT count() FROM pointsman.results FINAL WHERE query_id = X` seeing it
Goals (issue 11): sink >= 50k rows/s, queryable within 2 s.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
from confluent_kafka import Message
from rich.console import Console
from rich.table import Table

from infra import kafka
from infra.clickhouse import Database, connect, migrate
from infra.kafka_io import Outgoing, OutputProducer
from infra.machine import machine
from pipeline.bench_lanes import percentile
from pipeline.config import Config
from pipeline.sink import (
    INSERT_SETTINGS,
    RESULT_COLUMNS,
    RESULTS_TABLE,
    Prepared,
    SinkWriter,
    gc_paused,
    insert_result_messages,
    result_row,
)
from topics.admin import ensure_topics
from topics.codec import encode
from topics.names import Topics
from topics.schemas import ChatMessage, Query, Result, Timings
from workers.loop import LoopSettings, StopFlag, run_overlapped_loop

GOAL_ROWS_PER_S = 50_000
GOAL_QUERYABLE_S = 2.0
RAW_BATCH = 50_000
RAW_DATABASE = "bench_raw"
RAW_JSON_DATABASE = "bench_raw_json"
ENGINE_DATABASE = "bench_engine_only"
SOURCE_DATABASE = "bench_source"
DAY_S = 86_400.0

_TEXT = ("the model answer returns a short summary of each point with context and detail about "
         "revenue growth customers order shipping delay refund policy account password reset "
         "invoice tax region europe asia latency cache token budget quarter report analysis "
         "because however therefore first second finally note that you can also use")
_WORDS = _TEXT.split()
_TENANTS = (("acme", 5), ("globex", 3), ("initech", 2), ("umbrella", 1), ("hooli", 1))
_ROUTES = (("slm", 50), ("llm", 25), ("cache", 12), ("semantic_cache", 5), ("coalesced", 3),
           ("escalated", 5))
_MODELS = {"slm": "smollm2-135m-int8", "llm": "gpt-4o-mini", "escalated": "gpt-4o-mini",
           "cache": "gpt-4o-mini", "semantic_cache": "gpt-4o-mini", "coalesced": "gpt-4o-mini"}


def _text(rng: random.Random, low: int, high: int) -> str:
    """Words up to a length drawn from [low, high] characters."""
    size = rng.randint(low, high)
    words = rng.choices(_WORDS, k=size // 5 + 2)
    return " ".join(words)[:size]


def result_messages(n: int, *, seed: int = 0, now: float | None = None,
                    months: int = 3, prefix: str = "bs") -> list[Result]:
    """`n` realistic results: answers of 200-500 characters, the question (text, or chat messages
    for one in five) with metadata, five tenants, every route, a fifth of them from a backfill
    job, submitted over the last `months` months (so they span months+1 partitions)."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    tenants, tenant_weights = zip(*_TENANTS, strict=True)
    routes, route_weights = zip(*_ROUTES, strict=True)
    out = []
    for i in range(n):
        tenant = rng.choices(tenants, tenant_weights)[0]
        route = rng.choices(routes, route_weights)[0]
        backfill = rng.random() < 0.2
        submitted = now - rng.random() * months * 30 * DAY_S
        prompt = _text(rng, 60, 300)
        chat = rng.random() < 0.2
        query = Query(
            id=f"{prefix}-{i}", tenant=tenant, text=None if chat else prompt,
            messages=[ChatMessage("system", "You are a helpful support assistant."),
                      ChatMessage("user", prompt)] if chat else None,
            max_tokens=rng.choice((128, 256, 512)), temperature=rng.choice((0.0, 0.2, 0.7)),
            metadata={"source": rng.choice(("web", "api", "batch")), "user": f"u{rng.randrange(5000)}",
                      "session": f"{rng.getrandbits(64):016x}", "priority": rng.randrange(3)},
            submitted_at=submitted, job="bench-history" if backfill else None)
        prompt_tokens, completion_tokens = len(prompt) // 4 + 12, rng.randint(40, 130)
        llm_cost = prompt_tokens * 0.15e-6 + completion_tokens * 0.6e-6
        cost = {"slm": llm_cost / 40, "llm": llm_cost, "escalated": llm_cost * 1.02}.get(route, 0.0)
        timings = Timings(queued_ms=rng.uniform(0.5, 30), routed_ms=rng.uniform(0.05, 2),
                          wait_ms=rng.uniform(0.5, 50), inference_ms=rng.uniform(20, 1500))
        timings.total_ms = (timings.queued_ms + timings.routed_ms + timings.wait_ms
                            + timings.inference_ms)
        out.append(Result(
            query_id=query.id or "", tenant=tenant, route=route, answer=_text(rng, 200, 500),  # type: ignore[arg-type]
            model=_MODELS[route], prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_usd=cost, confidence=rng.random() if route in ("slm", "escalated") else None,
            similarity=rng.uniform(0.9, 1.0) if route == "semantic_cache" else None,
            error="upstream timed out" if rng.random() < 0.01 else None,
            fingerprint=xxhash.xxh3_64_hexdigest(prompt.encode()),
            route_reason=f"baseline-length: {len(prompt)} chars", submitted_at=submitted,
            completed_at=submitted + timings.total_ms / 1000, timings=timings, query=query,
            all_llm_cost_usd=llm_cost, slm_cost_usd=cost if route == "slm" else 0.0,
            lane="backfill" if backfill else "live", job="bench-history" if backfill else ""))
    return out


class TimedWriter:
    """The sink's writer, timed: when the first batch came, when the last row was stored, and
    how long was spent preparing batches and storing them (the two overlap, as in the sink)."""

    def __init__(self, writer: SinkWriter) -> None:
        self.writer = writer
        self.first: float | None = None
        self.last = 0.0
        # the process's CPU seconds over the same span (every thread: librdkafka's, the engine's):
        # steadier than wall time on a shared machine
        self.first_cpu = 0.0
        self.last_cpu = 0.0
        self.preparing = 0.0
        self.storing = 0.0
        self.batches = 0
        self.rows = 0  # rows stored, counted once the batch's times are taken

    def prepare(self, batch: list[Message]) -> Prepared:
        started = time.perf_counter()
        if self.first is None:
            self.first, self.first_cpu = started, time.process_time()
        prepared = self.writer.prepare(batch)
        self.preparing += time.perf_counter() - started
        return prepared

    def store(self, prepared: Prepared) -> None:
        started = time.perf_counter()
        self.writer.store(prepared)
        self.last, self.last_cpu = time.perf_counter(), time.process_time()
        self.storing += self.last - started
        self.batches += 1
        self.rows = self.writer.rows_written


@dataclass
class SinkThread:
    thread: threading.Thread
    stop: StopFlag
    timed: TimedWriter

    def wait_rows(self, rows: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.timed.rows < rows:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TimeoutError(f"the sink stored {self.timed.rows}/{rows} rows")
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def start_sink(bootstrap: str, topics: Topics, database: Database, batch_size: int,
               batch_wait_s: float) -> SinkThread:
    stop = StopFlag()
    timed = TimedWriter(SinkWriter(database, topics))
    loop = LoopSettings(bootstrap, f"{topics.prefix}sink",
                        (topics.results, topics.deadletter, topics.evaluations, topics.jobs),
                        batch_size, batch_wait_s)
    thread = threading.Thread(target=run_overlapped_loop, args=(loop, timed.prepare, timed.store, stop),
                              daemon=True)
    thread.start()
    return SinkThread(thread, stop, timed)


def clone_schema(database: Database, target: str) -> None:
    """Every pointsman table and view again in `target` (materialized views included, so an
    insert there does the same work as one into pointsman.results)."""
    database.command(f"CREATE DATABASE IF NOT EXISTS {target}")
    _, rows = database.query(
        "SELECT name, create_table_query, engine = 'MaterializedView' AS view FROM system.tables "
        "WHERE database = 'pointsman' ORDER BY view, name")
    for _name, ddl, _view in rows:
        database.command(ddl.replace("pointsman.", f"{target}."))


def bench_raw(database: Database, rows: list[list[Any]],
              messages: list[bytes]) -> dict[str, dict[str, Any]]:
    """Rows/s inserting the same results into fresh copies of the schema, `RAW_BATCH` rows an
    insert: as `rows` by clickhouse-connect (the server's path), as `messages` mapped by the
    engine (the embedded sink's insert, without its decode and checks), and by the engine
    alone. They take turns insert by insert, each first in its turn, so the engine's
    background merges and the machine's other load fall on all alike."""
    targets = {"raw": RAW_DATABASE, "raw_json": RAW_JSON_DATABASE, "engine_only": ENGINE_DATABASE}
    for target in targets.values():
        clone_schema(database, target)
    sources = fill_sources(database, rows)
    columns = ", ".join(RESULT_COLUMNS)
    paths: dict[str, Callable[[str, int], None]] = {
        "raw": lambda table, i: database.insert(table, rows[i:i + RAW_BATCH], RESULT_COLUMNS,
                                                INSERT_SETTINGS),
        "raw_json": lambda table, i: insert_result_messages(database, table,
                                                            messages[i:i + RAW_BATCH]),
        "engine_only": lambda table, i: database.command(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {sources[i]} "
            f"SETTINGS {', '.join(f'{k} = {v}' for k, v in INSERT_SETTINGS.items())}"),
    }
    names = {"raw": "raw Database.insert, row-oriented (the sink's path on a server)",
             "raw_json": "raw insert_result_messages (the embedded sink's insert)",
             "engine_only": "engine only: INSERT … SELECT from an in-memory copy"}
    spent = {path: [0.0, 0.0] for path in paths}
    order = list(paths)
    for i in range(0, len(rows), RAW_BATCH):
        for path in order:
            table = RESULTS_TABLE.replace("pointsman.", f"{targets[path]}.")
            wait_merges(database)
            started, cpu = time.perf_counter(), time.process_time()
            with gc_paused():  # as the sink inserts
                paths[path](table, i)
            spent[path][0] += time.perf_counter() - started
            spent[path][1] += time.process_time() - cpu
        order = order[1:] + order[:1]  # who goes first changes every turn
    return {path: {"name": f"{names[path]}, {RAW_BATCH} rows an insert", "rows": len(rows),
                   "seconds": round(seconds, 3), "per_s": round(len(rows) / seconds),
                   "cpu_s": round(cpu, 3), "per_cpu_s": round(len(rows) / cpu)}
            for path, (seconds, cpu) in spent.items()}


def fill_sources(database: Database, rows: list[list[Any]]) -> dict[int, str]:
    """Each RAW_BATCH chunk of `rows` in a Memory table of its own (unmeasured), keyed by its
    first row: what the engine-only path copies from, so it pays for no client at all."""
    columns = ", ".join(RESULT_COLUMNS)
    database.command(f"CREATE DATABASE IF NOT EXISTS {SOURCE_DATABASE}")
    sources = {}
    for i in range(0, len(rows), RAW_BATCH):
        name = sources[i] = f"{SOURCE_DATABASE}.chunk_{i}"
        database.command(f"CREATE TABLE {name} ENGINE = Memory AS SELECT {columns} "
                         f"FROM {RAW_DATABASE}.results LIMIT 0")
        database.insert(name, rows[i:i + RAW_BATCH], RESULT_COLUMNS)
    return sources


def wait_merges(database: Database, timeout_s: float = 60) -> None:
    """Until the engine merges nothing: the parts an insert leaves are merged in the background,
    on the engine's threads, which the process's CPU time counts; the next insert measured
    must not pay for the one before (or for the sink's)."""
    deadline = time.monotonic() + timeout_s
    while database.query("SELECT count() FROM system.merges")[1][0][0] and (
            time.monotonic() < deadline):
        time.sleep(0.05)


def _count(database: Database, query_id: str) -> int:
    return int(database.query(
        f"SELECT count() FROM {RESULTS_TABLE} FINAL WHERE query_id = '{query_id}'")[1][0][0])


def bench_queryable(database: Database, producer: OutputProducer, topics: Topics, samples: int,
                    gap_s: float, timeout_s: float = 30.0) -> dict[str, Any]:
    """Produce one result at a time to the idle sink; seconds until a query sees it."""
    seconds = []
    for i, result in enumerate(result_messages(samples, seed=7, months=0, prefix="bq")):
        result.submitted_at = result.completed_at = time.time()
        started = time.perf_counter()
        producer.send([Outgoing(topics.results, result.query_id.encode(), encode(result))])
        producer.deliver()
        while _count(database, result.query_id) == 0:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"result {i} not queryable after {timeout_s}s")
            time.sleep(0.01)
        seconds.append(time.perf_counter() - started)
        time.sleep(gap_s)
    return {"samples": len(seconds), "p50_s": round(percentile(seconds, 50), 3),
            "p99_s": round(percentile(seconds, 99), 3), "max_s": round(max(seconds), 3)}


def measure(config: Config, *, rows: int, batch_size: int, batch_wait_s: float, samples: int,
            data_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    with kafka.started(config.kafka()):
        return _measure(config, rows=rows, batch_size=batch_size, batch_wait_s=batch_wait_s,
                        samples=samples, data_dir=data_dir, log=log)


def _measure(config: Config, *, rows: int, batch_size: int, batch_wait_s: float, samples: int,
             data_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    topics = Topics(f"bench-sink-{uuid.uuid4().hex[:8]}.")
    ensure_topics(config.bootstrap, topics.specs(config.partitions))
    log(f"generating {rows} results")
    results = result_messages(rows)
    values = [encode(r) for r in results]
    producer = OutputProducer(config.bootstrap)
    log(f"producing {rows} results ({sum(map(len, values)) / rows:.0f} bytes each) "
        f"to {topics.results}")
    for i in range(0, rows, 10_000):
        producer.send([Outgoing(topics.results, r.query_id.encode(), v)
                       for r, v in zip(results[i:i + 10_000], values[i:i + 10_000], strict=True)])
        producer.deliver()
    database = Database(connect(f"chdb://{data_dir / 'clickhouse'}"))
    migrate(database.client)
    log("sink consuming")
    sink = start_sink(config.bootstrap, topics, database, batch_size, batch_wait_s)
    try:
        sink.wait_rows(rows, timeout=600)
        timed = sink.timed
        seconds, cpu = timed.last - (timed.first or timed.last), timed.last_cpu - timed.first_cpu
        sink_row = {"name": f"sink: SinkWriter over run_overlapped_loop (batch {batch_size})",
                    "rows": rows, "seconds": round(seconds, 3), "per_s": round(rows / seconds),
                    "cpu_s": round(cpu, 3), "per_cpu_s": round(rows / cpu),
                    "batches": timed.batches,
                    # shares of the sink's time: preparing (decode, checks) overlaps storing
                    "preparing_share": round(timed.preparing / seconds, 2),
                    "storing_share": round(timed.storing / seconds, 2)}
        stored = int(database.query(f"SELECT count() FROM {RESULTS_TABLE}")[1][0][0])
        log(f"queryable latency, {samples} samples")
        queryable = bench_queryable(database, producer, topics, samples, gap_s=0.3)
    finally:
        sink.close()
    log("raw inserts")
    raw = bench_raw(database, [result_row(r) for r in results], values)
    raw_row = raw["raw"]
    return {
        "machine": machine(),
        "settings": {"rows": rows, "partitions": config.partitions, "batch_size": batch_size,
                     "batch_wait_s": batch_wait_s,
                     "bytes_per_message": round(sum(map(len, values)) / rows),
                     "insert_settings": INSERT_SETTINGS},
        "sink": sink_row, **raw, "stored": stored,
        "sink_vs_raw": round(sink_row["per_s"] / raw_row["per_s"], 2),
        "sink_vs_raw_per_cpu_s": round(sink_row["per_cpu_s"] / raw_row["per_cpu_s"], 2),
        "queryable": queryable,
        "goals": {"rows_per_s": GOAL_ROWS_PER_S, "queryable_s": GOAL_QUERYABLE_S},
    }


def run_bench_sink(config: Config, console: Console, *, rows: int, as_json: bool,
                   samples: int = 20) -> int:
    settings = config.sink()
    with tempfile.TemporaryDirectory(prefix="pointsman-bench-sink-") as data_dir:
        report = measure(config, rows=rows, batch_size=settings.batch_size,
                         batch_wait_s=settings.batch_wait_s, samples=samples,
                         data_dir=Path(data_dir),
                         log=(lambda _: None) if as_json else console.log)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print(console, report)
    return 0


def _print(console: Console, report: dict[str, Any]) -> None:
    s, m, q = report["settings"], report["machine"], report["queryable"]
    table = Table(title=f"sink ingest, {s['rows']} results of ~{s['bytes_per_message']} bytes, "
                  f"{s['partitions']} partitions")
    for column in ("name", "rows", "seconds", "rows/s", "cpu s", "rows/cpu s"):
        table.add_column(column)
    for row in (report["sink"], report["raw"], report["raw_json"], report["engine_only"]):
        table.add_row(row["name"], str(row["rows"]), f"{row['seconds']:.2f}", str(row["per_s"]),
                      f"{row['cpu_s']:.2f}", str(row["per_cpu_s"]))
    console.print(table)
    console.print(f"sink/raw {report['sink_vs_raw']}x ({report['sink_vs_raw_per_cpu_s']}x per CPU "
                  f"second); preparing {report['sink']['preparing_share']:.0%} and storing "
                  f"{report['sink']['storing_share']:.0%} of the sink's time; goal >= "
                  f"{GOAL_ROWS_PER_S} rows/s")
    console.print(f"produced -> queryable: p50 {q['p50_s']} s, p99 {q['p99_s']} s, max "
                  f"{q['max_s']} s over {q['samples']} (goal <= {GOAL_QUERYABLE_S} s); "
                  f"{m['nproc']} cpus, {m['cpu']}")
