"""What each CLI command does, as plain functions over a Config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from infra import kafka
from pipeline.config import Config
from topics.admin import ensure_topics
from topics.errors import ConfigError

if TYPE_CHECKING:
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
    from pipeline.roles import sql_endpoint_settings

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
    for line in endpoint_status(sql_endpoint_settings(config), config.dsn):
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


def backfill(config: Config, file: Path) -> None:
    from pipeline.produce import produce_file

    sent = produce_file(config.bootstrap, config.topics.backfill, file, progress=True,
                        deadletter=config.topics.deadletter)
    _print_sent(sent, f"the backfill lane {config.topics.backfill}", config.topics.deadletter)


def _print_sent(sent: FileSent, target: str, deadletter: str) -> None:
    console.print(f"sent {sent.sent} lines to {target}")
    if sent.dead_lettered:
        console.print(f"[yellow]{sent.dead_lettered} lines over the message size limit were not "
                      f"sent; they are kept as dead letters on {deadletter}[/yellow]")


def sql(config: Config, query: str) -> tuple[list[str], list[Any]]:
    from infra.query_server import open_reader

    return open_reader(config.dsn).query(query)


def report(config: Config, *, as_json: bool = False) -> None:
    from infra.query_server import open_reader
    from pipeline import report as report_module

    data = report_module.collect(open_reader(config.dsn))
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    else:
        report_module.render(data, console)


def prepare_model(config: Config, *, quantize: bool = True, force: bool = False) -> Path:
    from workers.slm.prepare import prepare_smollm2

    target = prepare_smollm2(config.slm_model.parent, quantize=quantize, force=force)
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


def quantize(src: Path, dst: Path, *, method: str = "nbits") -> int:
    from workers.slm.quantize import run_quantize

    return run_quantize(src, dst, console, method=method)
