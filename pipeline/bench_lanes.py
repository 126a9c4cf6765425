"""`pointsman bench lanes`: live latency alone and during a large backfill, side by side.

One local pipeline (Faust router, LLM worker, and the SLM worker for `--track slm|both`) on a
slow stand-in upstream (every call takes `--latency-ms`), in two phases on the same processes:
  alone            `--live` live queries at `--rate` per second, nothing else
  during backfill  `--backfill` backfill queries sent first; once they are being answered, the
                   same live traffic again
Latency is each live result's total_ms (from the query's submitted_at, stamped when sent, to
its result). The ratio during/alone is the number to watch (goal: 1.5x at most); the backfill's
own run time shows it is not starved once live traffic is idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from infra import kafka
from infra.kafka_io import Outgoing, OutputProducer
from infra.machine import machine
from pipeline.config import Config
from topics.admin import ensure_topics
from topics.codec import decode
from topics.names import Topics
from topics.schemas import Result
from workers.llm_standin import Faults, StandinLLM, StandinServer

GOAL = 1.5  # issue 12: live latency during a backfill within 1.5x of live alone


@dataclass(frozen=True)
class LanesBench:
    live: int = 100  # live queries per phase
    rate: float = 10.0  # live queries per second
    backfill: int = 2000
    latency_ms: float = 200.0  # every stand-in call takes this long
    track: str = "llm"  # llm, slm or both (both: half the queries of each)
    max_tokens: int = 16


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list: a value that occurred."""
    return float(np.percentile(values, q, method="inverted_cdf"))


class _Results:
    """Every result on the bench's results topic, first copy per query id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "enable.auto.commit": False,
                                  "group.id": f"pointsman-bench-lanes-{uuid.uuid4().hex[:6]}"})
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: dict[str, Result] = {}
        self.first_at: dict[str, float] = {}

    def poll(self, seconds: float) -> None:
        for message in self.consumer.consume(2000, timeout=seconds):
            if message.error() is None:
                result = decode(message.value(), Result)
                if result.query_id not in self.seen:
                    self.seen[result.query_id] = result
                    self.first_at[result.query_id] = time.time()

    def count(self, prefix: str) -> int:
        return sum(1 for qid in self.seen if qid.startswith(prefix))

    def wait(self, prefix: str, expected: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count(prefix) < expected:
            if time.monotonic() > deadline:
                return False
            self.poll(0.1)
        return True


def _tenant(bench: LanesBench, i: int) -> str:
    if bench.track == "both":
        return ("bench-slm", "bench-llm")[i % 2]
    return f"bench-{bench.track}"


def _query(bench: LanesBench, qid: str, i: int, **extra: Any) -> bytes:
    return json.dumps({"id": qid, "tenant": _tenant(bench, i), "max_tokens": bench.max_tokens,
                       "text": f"Question {qid}: say something about the number {i}.",
                       **extra}).encode()


def _live_phase(bench: LanesBench, producer: OutputProducer, results: _Results, topics: Topics,
                name: str) -> dict[str, Any]:
    """Live queries at a fixed rate, open loop; the latencies of their results."""
    gap = 1.0 / bench.rate
    started = time.monotonic()
    backfill_before = results.count("bf-")
    for i in range(bench.live):
        producer.send([Outgoing(topics.queries, None,
                                _query(bench, f"{name}-{i}", i, submitted_at=time.time()))])
        producer.deliver()
        while (wait := started + (i + 1) * gap - time.monotonic()) > 0:
            results.poll(min(wait, 0.05))
    answered = results.wait(f"{name}-", bench.live, timeout=120)
    mine = [r for qid, r in results.seen.items() if qid.startswith(f"{name}-")]
    latencies = [r.timings.total_ms for r in mine]
    if not answered or not latencies:
        raise TimeoutError(f"{name}: {len(latencies)}/{bench.live} live queries answered in time")
    # where the slow ones spent their time: router queue, router, route topic, upstream call
    stages = {stage: round(percentile([getattr(r.timings, stage) for r in mine], 99), 1)
              for stage in ("queued_ms", "routed_ms", "wait_ms", "inference_ms")}
    return {"phase": name, "live": len(latencies), "errors": sum(1 for r in mine if r.error),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "max_ms": round(max(latencies), 1),
            "p99_stage_ms": stages,
            "backfill_answered_meanwhile": results.count("bf-") - backfill_before}


def _start_roles(config: Config, topics: Topics, upstream: StandinServer, bench: LanesBench,
                 logs: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "POINTSMAN_KAFKA_BOOTSTRAP": config.bootstrap,
           "POINTSMAN_TOPIC_PREFIX": topics.prefix, "POINTSMAN_LLM_BASE_URL": upstream.base_url,
           "POINTSMAN_SEMANTIC_CACHE": "off", "POINTSMAN_SLM_ESCALATE_BELOW": "0",
           "POINTSMAN_TENANT_ROUTES": "bench-slm=slm,bench-llm=llm"}
    roles = ["router", "llm"] + (["slm"] if bench.track in ("slm", "both") else [])
    procs = []
    for role in roles:
        log = (logs / f"{role}.log").open("ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", role],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def measure(config: Config, bench: LanesBench, logs: Path) -> dict[str, Any]:
    with kafka.started(config.kafka()):
        return _measure(config, bench, logs)


def _measure(config: Config, bench: LanesBench, logs: Path) -> dict[str, Any]:
    topics = Topics(f"bench-lanes-{uuid.uuid4().hex[:8]}.")
    ensure_topics(config.bootstrap, topics.specs(config.partitions))
    upstream = StandinServer(StandinLLM(
        model=config.llm_model, faults=Faults(slow=1.0, slow_s=bench.latency_ms / 1000))).start()
    procs = _start_roles(config, topics, upstream, bench, logs)
    results = _Results(config.bootstrap, topics.results)
    producer = OutputProducer(config.bootstrap)
    try:
        # warm: every role up and answering before anything is timed
        producer.send([Outgoing(topics.queries, None, _query(bench, f"warm-{i}", i))
                       for i in range(4)])
        producer.deliver()
        if not results.wait("warm-", 4, timeout=180):
            raise TimeoutError(f"the pipeline did not answer its warm-up queries (logs: {logs})")
        alone = _live_phase(bench, producer, results, topics, "alone")
        sent = time.monotonic()
        producer.send([Outgoing(topics.backfill, None, _query(bench, f"bf-{i}", i))
                       for i in range(bench.backfill)])
        producer.deliver()
        # the live traffic comes once the workers are busy with the backlog
        results.wait("bf-", min(20, bench.backfill), timeout=120)
        during = _live_phase(bench, producer, results, topics, "during")
        during["backfill_left"] = bench.backfill - results.count("bf-")
        finished = results.wait("bf-", bench.backfill, timeout=600)
        backfill_s = time.monotonic() - sent
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        results.consumer.close()
        upstream.stop()
    return {
        "machine": machine(),
        "settings": {"track": bench.track, "live": bench.live, "rate_per_s": bench.rate,
                     "backfill": bench.backfill, "upstream_latency_ms": bench.latency_ms,
                     "llm_concurrency": config.llm_concurrency, "max_tokens": bench.max_tokens},
        "alone": alone, "during_backfill": during,
        "ratio_p50": round(during["p50_ms"] / alone["p50_ms"], 2),
        "ratio_p99": round(during["p99_ms"] / alone["p99_ms"], 2), "goal": GOAL,
        "backfill": {"queries": bench.backfill, "finished": finished,
                     "answered": results.count("bf-"), "seconds": round(backfill_s, 1),
                     "per_s": round(results.count("bf-") / backfill_s, 1)},
    }


def run_bench_lanes(config: Config, console: Console, bench: LanesBench, *, as_json: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="pointsman-bench-lanes-") as logs:
        report = measure(config, bench, Path(logs))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print(console, report)
    return 0


def _print(console: Console, report: dict[str, Any]) -> None:
    s, m = report["settings"], report["machine"]
    table = Table(title=f"live latency, {s['track']} track, {s['live']} live queries at "
                  f"{s['rate_per_s']}/s, upstream {s['upstream_latency_ms']:.0f} ms, "
                  f"backfill of {s['backfill']}")
    for column in ("phase", "live", "p50_ms", "p99_ms", "max_ms", "p99 queued/routed/wait/call",
                   "backfill answered meanwhile"):
        table.add_column(column)
    for row in (report["alone"], report["during_backfill"]):
        stages = "/".join(f"{v:.0f}" for v in row["p99_stage_ms"].values())
        table.add_row(row["phase"], str(row["live"]), str(row["p50_ms"]), str(row["p99_ms"]),
                      str(row["max_ms"]), stages, str(row["backfill_answered_meanwhile"]))
    console.print(table)
    b = report["backfill"]
    console.print(f"during/alone: p50 {report['ratio_p50']}x, p99 {report['ratio_p99']}x "
                  f"(goal <= {report['goal']}x); backfill {b['answered']}/{b['queries']} in "
                  f"{b['seconds']} s ({b['per_s']}/s); {m['nproc']} cpus, {m['cpu']}")
