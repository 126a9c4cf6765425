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
from infra.query_server import wait_for_endpoint
from pipeline import report
from pipeline.config import Config
from pipeline.produce import produce_file
from pipeline.roles import ROLES, Supervisor
from pipeline.validate import validate
from topics.admin import ensure_topics
from topics.errors import InvalidMessage, PointsmanError

SAMPLE = "demo.jsonl"


def tagged_workload(run_id: str) -> tuple[list[str], int, int]:
    """The bundled sample with run-unique ids on JSON objects; returns lines, valid, invalid."""
    lines, valid = [], 0
    sample = resources.files("pipeline").joinpath("samples", SAMPLE).read_text("utf-8")
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
    from pipeline.commands import ensure_model

    ensure_model(config)
    console.print(f"SLM model: {config.slm_model}")

    supervisor = Supervisor(ROLES)
    supervisor.start()
    run_id = uuid.uuid4().hex[:8]
    started = time.time()
    try:
        lines, valid, invalid = tagged_workload(run_id)
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        sent = produce_file(config.bootstrap, config.topics.queries, Path(f.name))
        os.unlink(f.name)
        console.print(f"sent {sent} lines ({valid} valid queries, {invalid} malformed) "
                      f"to {config.topics.queries}; waiting for answers ...")
        done = _wait_for(config, run_id, valid, invalid, started, console, timeout_s)
        console.rule("Report")
        report.render(report.collect(wait_for_endpoint(config.dsn)), console)
        return 0 if done else 1
    finally:
        if not keep_running:
            supervisor.stop()
            if not was_running:
                kafka.stop(kafka_cfg)


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
