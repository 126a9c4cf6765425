"""`pointsman demo`: the whole pipeline on the embedded default, with a bundled workload."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

from rich.console import Console

from infra import kafka
from infra.query_server import Reader, wait_for_endpoint
from pipeline import report
from pipeline.config import Config
from pipeline.produce import produce_file
from pipeline.roles import ROLES, ensure_model
from pipeline.supervisor import Supervisor
from pipeline.validate import validate
from topics.admin import ensure_topics
from topics.errors import InvalidMessage, PointsmanError

SAMPLE = "demo.jsonl"
# after the first wave is answered: paraphrases (semantic hits), and near misses the guards and
# the tenant scope must refuse (another tenant, a changed number, a changed entity)
SECOND_WAVE = "demo_wave2.jsonl"


def tagged_workload(run_id: str, sample_name: str = SAMPLE) -> tuple[list[str], int, int]:
    """A bundled sample with run-unique ids on JSON objects; returns lines, valid, invalid."""
    lines, valid = [], 0
    sample = resources.files("pipeline").joinpath("samples", sample_name).read_text("utf-8")
    for n, line in enumerate(sample.splitlines()):
        try:
            obj = json.loads(line)
            if isinstance(obj, dict):
                obj["id"] = f"demo-{run_id}-{n}"
                line = json.dumps(obj, ensure_ascii=False)
        except ValueError:
            pass
        try:
            validate(line.encode(), origin="demo", timestamp=0.0)
            valid += 1
        except InvalidMessage:
            pass
        lines.append(line)
    return lines, valid, len(lines) - valid


def run_demo(config: Config, console: Console, *, keep_running: bool = False,
             timeout_s: float = 900.0) -> int:
    console.rule("Pointsman demo")
    kafka_cfg = config.kafka()
    was_running = kafka.status(kafka_cfg).running
    broker = kafka.start(kafka_cfg)
    console.print(f"Kafka {broker.version} (KRaft) at {broker.bootstrap}")
    ensure_topics(config.bootstrap, config.topics.specs(config.partitions))
    # prepared here, not left to the slm role, so the LLM stand-in starts with the model too
    ensure_model(config, say=console.print)
    console.print(f"SLM model: {config.slm_model}")

    supervisor = Supervisor(ROLES)
    supervisor.start()
    run_id = uuid.uuid4().hex[:8]
    started = time.time()
    try:
        lines, valid, invalid = tagged_workload(run_id)
        sent = _send(config, lines)
        console.print(f"sent {sent} lines ({valid} valid queries, {invalid} malformed) "
                      f"to {config.topics.queries}; waiting for answers ...")
        done = _wait_for(config, run_id, valid, invalid, started, console, timeout_s)
        if done:
            done = _second_wave(config, run_id, console, timeout_s)
        console.rule("Report")
        reader = wait_for_endpoint(config.dsn)
        report.render(report.collect(reader), console)
        ok, lines = judge(done, failed_queries(reader, run_id))
        for line in lines:
            console.print(f"[green]{line}[/green]" if ok else f"[red]{line}[/red]")
        return 0 if ok else 1
    finally:
        if not keep_running:
            supervisor.stop()
            if not was_running:
                kafka.stop(kafka_cfg)


def failed_queries(reader: Reader, run_id: str) -> list[tuple[str, str]]:
    """(query id, error) of this run's queries (both waves) whose result is an error."""
    sql = ("SELECT query_id, error FROM pointsman.results FINAL "
           f"WHERE query_id LIKE 'demo-{run_id}%' AND error != '' ORDER BY query_id")
    return [(str(qid), str(error)) for qid, error in reader.query(sql)[1]]


def judge(answered_all: bool, failures: list[tuple[str, str]], *,
          shown: int = 5) -> tuple[bool, list[str]]:
    """The demo passes only if every query of its workload got an answer that is not an error;
    otherwise the lines say how many failed and why (grouped by reason, a few ids each)."""
    if not failures:
        if answered_all:
            return True, ["demo passed: every query of the workload answered, none with an error"]
        return False, ["demo failed: not every query was answered"]
    by_reason: dict[str, list[str]] = {}
    for query_id, error in failures:
        by_reason.setdefault(error, []).append(query_id)
    lines = [] if answered_all else ["demo failed: not every query was answered"]
    lines.append(f"demo failed: {len(failures)} of the workload's queries ended with an error")
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
        lines.append(f"  {len(ids)} x {reason}: {', '.join(ids[:shown])}{more}")
    return False, lines


def _send(config: Config, lines: list[str]) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        return produce_file(config.bootstrap, config.topics.queries, Path(f.name)).sent
    finally:
        os.unlink(f.name)


def _second_wave(config: Config, run_id: str, console: Console, timeout_s: float) -> bool:
    time.sleep(2.0)  # the routers learn the first wave's answers from the results topic
    wave = f"{run_id}w2"
    lines, valid, _ = tagged_workload(wave, SECOND_WAVE)
    _send(config, lines)
    console.print(f"second wave: {valid} rephrased or near-miss questions ...")
    reader = wait_for_endpoint(config.dsn, timeout_s=120)
    sql = ("SELECT tenant, route, similarity, query_id FROM pointsman.results FINAL "
           f"WHERE query_id LIKE 'demo-{wave}-%' ORDER BY query_id")
    deadline = time.monotonic() + timeout_s
    rows: list = []
    while time.monotonic() < deadline and len(rows) < valid:
        time.sleep(1.0)
        rows = reader.query(sql)[1]
    texts = [json.loads(line)["text"] for line in lines]
    for tenant, route, similarity, query_id in rows:
        shown = f"{similarity:.3f}" if similarity is not None else "-"
        text = texts[int(query_id.rsplit("-", 1)[1])]
        console.print(f"  {tenant:7} {route:15} similarity {shown:6} {text}")
    console.print(f"  second wave: answered {len(rows)}/{valid}")
    return len(rows) >= valid


def _wait_for(config: Config, run_id: str, valid: int, invalid: int, started: float,
              console: Console, timeout_s: float) -> bool:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started - 5))
    results_sql = (f"SELECT count() FROM pointsman.results FINAL "
                   f"WHERE query_id LIKE 'demo-{run_id}-%'")
    letters_sql = (f"SELECT count() FROM pointsman.dead_letters FINAL "
                   f"WHERE failed_at >= '{since}' AND source_topic = '{config.topics.queries}'")
    deadline = time.monotonic() + timeout_s
    reader = wait_for_endpoint(config.dsn, timeout_s=120)
    last = (-1, -1)
    while time.monotonic() < deadline:
        time.sleep(2.0)
        try:
            answered = int(reader.query(results_sql)[1][0][0])
            dead = int(reader.query(letters_sql)[1][0][0])
        except PointsmanError as exc:  # the sink may be restarting
            console.print(f"  waiting for the sink: {exc}")
            reader = wait_for_endpoint(config.dsn, timeout_s=120)
            continue
        if (answered, dead) != last:
            console.print(f"  answered {answered}/{valid}, dead-lettered {dead}/{invalid}")
            last = (answered, dead)
        if answered >= valid and dead >= invalid:
            return True
    console.print("[red]timed out before every query was answered[/red]")
    return False
