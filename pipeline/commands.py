"""What each CLI command does, as plain functions over a Config."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from infra import kafka
from pipeline.config import Config
from topics.admin import ensure_topics
from topics.errors import ConfigError, InfraError

if TYPE_CHECKING:
    from infra.query_server import Reader
    from pipeline.produce import FileSent

# rich assumes 80 columns when piped; the report table needs more
console = Console() if sys.stdout.isatty() else Console(width=120)


def up(config: Config) -> None:
    status = kafka.start(config.kafka())
    console.print(f"Kafka {status.version} running at {status.bootstrap} (pid {status.pid}, "
                  f"data in {status.home})")
    created = ensure_topics(config.bootstrap, config.topics.specs(config.partitions))
    if created:
        console.print(f"created topics: {', '.join(created)}")


def down(config: Config) -> None:
    stopped = kafka.stop(config.kafka())
    console.print("Kafka stopped" if stopped else "Kafka was not running")


def status(config: Config) -> None:
    from infra.query_server import endpoint_status

    broker = kafka.status(config.kafka())
    state = "running" if broker.running else "stopped"
    console.print(f"local Kafka: {state} at {broker.bootstrap} ({broker.detail})")
    if broker.running:
        from confluent_kafka.admin import AdminClient

        topics = AdminClient({"bootstrap.servers": config.bootstrap}).list_topics(timeout=10).topics
        for spec in config.topics.specs(config.partitions):
            found = topics.get(spec.name)
            console.print(f"  {spec.name}: " +
                          (f"{len(found.partitions)} partitions" if found else "missing"))
    for line in endpoint_status(config.sql_endpoint(), config.dsn):
        console.print(line, markup=False, highlight=False)


def run(config: Config, role: str) -> None:
    """One role in this process, or every role under the supervisor. Each role prepares what it
    needs itself (the slm role its model), so one that cannot start never stops the others."""
    from pipeline.roles import ROLES, run_role
    from pipeline.supervisor import Supervisor

    if role != "all":
        run_role(role, config)
        return
    Supervisor(ROLES).run()


def produce(config: Config, text: str | None, file: Path | None, tenant: str, max_tokens: int,
            query_id: str | None) -> None:
    from pipeline.produce import produce_file, produce_one, query_message

    if file is not None:
        sent = produce_file(config.bootstrap, config.topics.queries, file,
                            deadletter=config.topics.deadletter)
        _print_sent(sent, config.topics.queries, config.topics.deadletter)
    elif text:
        message = query_message(config.topics.queries, text, tenant=tenant,
                                max_tokens=max_tokens, query_id=query_id)
        produce_one(config.bootstrap, message)
        console.print(f"sent query {message.key.decode() if message.key else ''}")
    else:
        raise ConfigError("give a TEXT or --file F.jsonl")


def pipeline_reader(dsn: str) -> Reader:
    """A reader for commands that run beside the pipeline: the sink's endpoint, or the database
    itself when no sink holds it. A sink that is starting holds the database before its
    endpoint is up: then wait for the endpoint rather than fail."""
    from infra.clickhouse import is_embedded
    from infra.query_server import open_reader, wait_for_endpoint

    try:
        return open_reader(dsn)
    except InfraError as exc:
        if not is_embedded(dsn):
            raise
        try:
            return wait_for_endpoint(dsn, timeout_s=30)
        except InfraError:
            raise exc from None  # no sink came up: the reason the database would not open


def backfill(config: Config, source: str, *, job: str | None, rate: float | None,
             budget_usd: float | None, file_format: str | None, from_sql: str | None,
             wait: bool, window: int, cache: bool = True) -> int:
    """Run (or resume) a backfill job; 0 when every row was handled, 3 when the budget stopped it."""
    from functools import partial

    from pipeline.backfill.convert import ConversionFailed
    from pipeline.backfill.run import JobConflict, JobRun, JobSettings
    from pipeline.backfill.sources import open_file, open_sql

    name = job or default_job_name(source)
    try:
        if from_sql is not None:
            data = open_sql(pipeline_reader(config.dsn), from_sql)
        else:
            data = open_file(Path(source), file_format)
    except (OSError, ValueError, ConversionFailed) as exc:
        raise ConfigError(f"backfill: {exc}") from None
    settings = JobSettings(name, rate=rate, budget_usd=budget_usd, window=window, wait=wait,
                           cache=cache)
    try:
        outcome = JobRun(config.bootstrap, config.topics, settings, data,
                         partial(pipeline_reader, config.dsn), console).run()
    except JobConflict as exc:
        raise ConfigError(str(exc)) from None
    except KeyboardInterrupt:
        console.print(f"job {name} paused; run the same command to resume it")
        raise
    finally:
        data.close()
    state = outcome.state
    console.print(
        f"job {name}: {state.total} rows; this run sent {outcome.sent_now}, skipped "
        f"{outcome.skipped_now} (answered already), dead-lettered {outcome.invalid_now} (not valid: "
        f"{config.topics.deadletter}); the job has {outcome.answered} answered, {outcome.errors} "
        f"errors, ${outcome.spent_usd:.6f} spent",
        soft_wrap=True)
    if outcome.waiting:
        console.print(f"{outcome.waiting} queries are still being answered: "
                      f"`pointsman backfill status {name}` follows them", soft_wrap=True)
    if state.status == "budget":
        console.print(f"[yellow]job {name} stopped at its budget (${budget_usd:g}) with "
                      f"{state.total - state.next_row} rows not sent; run it again with a higher "
                      "--budget-usd to go on[/yellow]", soft_wrap=True)
        return 3
    return 0


def default_job_name(source: str) -> str:
    """A file's job name when none is given: its name without the extension, made valid."""
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "-", Path(source).stem).lstrip("-_.") or "backfill"
    return stem[:128]


def backfill_status(config: Config, name: str, *, as_json: bool) -> int:
    from pipeline.backfill.inspect import job_status, print_json

    status = job_status(pipeline_reader(config.dsn), name)
    if status is None:
        raise ConfigError(f"no backfill job named {name!r} (`pointsman backfill list` shows them)")
    if as_json:
        sys.stdout.write(print_json(status) + "\n")
        return 0
    routes = ", ".join(f"{route} {n}" for route, n in status["routes"].items()) or "none yet"
    console.print(f"job {name}: {status['status']}; {status.get('total', '?')} rows, "
                  f"{status['answered']} answered, {status['errors']} errors, "
                  f"${status['cost_usd']:.6f} (all-LLM ${status['all_llm_cost_usd']:.6f}); routes: {routes}",
                  soft_wrap=True)
    return 0


def backfill_list(config: Config, *, as_json: bool) -> int:
    from pipeline.backfill.inspect import job_list, print_json

    jobs = job_list(pipeline_reader(config.dsn))
    if as_json:
        sys.stdout.write(print_json(jobs) + "\n")
        return 0
    from rich.table import Table

    table = Table("job", "status", "rows", "sent", "answered", "errors", "cost_usd", "updated")
    for j in jobs:
        table.add_row(str(j["name"]), str(j["status"]), str(j["total"]), str(j["sent"]),
                      str(j["answered"]), str(j["errors"]), f"{float(j['cost_usd'] or 0):.6f}",
                      str(j["updated_at"])[:19])
    console.print(table)
    return 0


def backfill_export(config: Config, name: str, fmt: str, out: Path | None) -> int:
    from pipeline.backfill.inspect import export_job

    target = out or Path(f"{name}.{fmt}")
    rows = export_job(pipeline_reader(config.dsn), name, fmt, target)
    console.print(f"wrote {rows} results of job {name} to {target}")
    return 0


def _print_sent(sent: FileSent, target: str, deadletter: str) -> None:
    console.print(f"sent {sent.sent} lines to {target}")
    if sent.dead_lettered:
        console.print(f"[yellow]{sent.dead_lettered} lines over the message size limit were not "
                      f"sent; they are kept as dead letters on {deadletter}[/yellow]")


def sql(config: Config, query: str) -> tuple[list[str], list[Any]]:
    from infra.query_server import open_reader

    return open_reader(config.dsn).query(query)


def report(config: Config, *, as_json: bool = False, png: Path | None = None,
           html: Path | None = None) -> None:
    from infra.query_server import open_reader
    from pipeline import report as report_module

    reader = open_reader(config.dsn)
    data = report_module.collect(reader)
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    else:
        report_module.render(data, console)
    if png is not None or html is not None:
        from pipeline import report_plots

        series = report_plots.collect_series(reader)
        if png is not None:
            report_plots.write_png(series, png)
        if html is not None:
            report_plots.write_html(data, series, html)
        written = " and ".join(str(p) for p in (png, html) if p is not None)
        # to stderr, so --json output stays one JSON document
        Console(stderr=True).print(f"wrote {written}")


def prepare_model(config: Config, *, quantize: bool = True, force: bool = False) -> Path:
    from workers.slm.prepare import prepare_smollm2
    from workers.slm.progress import Steps

    with Steps(console) as steps:
        target = prepare_smollm2(config.slm_model.parent, quantize=quantize, force=force, steps=steps)
    console.print(f"SLM ready in {target}")
    return target


def demo(config: Config, *, keep_running: bool = False) -> int:
    from pipeline.demo import run_demo

    return run_demo(config, console, keep_running=keep_running)


def bench_router(config: Config, *, messages: int, as_json: bool) -> None:
    from pipeline.bench import bench_router as run

    run(config, console, messages=messages, as_json=as_json)


def bench_slm(config: Config, *, batches: tuple[int, ...], tokens: int, threads: int,
              as_json: bool, kernels: bool = False) -> int:
    from workers.slm.bench import run_bench_slm
    from workers.slm.prepare import model_dir_name

    fp32 = config.slm_model.parent / model_dir_name(quantize=False)
    if kernels:
        from workers.slm.kernels import run_bench_kernels

        return run_bench_kernels(fp32, batches=batches, threads=threads, as_json=as_json, console=console)
    return run_bench_slm(config.slm_model, fp32, batches=batches, new_tokens=tokens,
                         threads=threads, as_json=as_json, console=console)


def quantize(src: Path, dst: Path, *, method: str = "nbits", block_size: int | None = None) -> int:
    from workers.slm.quantize import run_quantize

    return run_quantize(src, dst, console, method=method, block_size=block_size)
