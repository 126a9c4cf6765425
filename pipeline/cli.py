"""The `pointsman` command: parses arguments and calls one function. Reads the environment."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import ENV_DOC, Config
from topics.errors import ConfigError, PointsmanError
from topics.redact import install_redaction, redact, register_secret

if TYPE_CHECKING:
    from rich.text import Text


def _parser() -> argparse.ArgumentParser:
    env = "\n".join(f"  {k:30} {v}" for k, v in ENV_DOC.items())
    parser = argparse.ArgumentParser(
        prog="pointsman", description="Route LLM queries from Kafka to cache, SLM or LLM.",
        epilog=f"environment:\n{env}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local Kafka broker and create the topics")
    sub.add_parser("down", help="stop the local Kafka broker (its data stays)")
    sub.add_parser("status", help="broker and topic status")
    run = sub.add_parser("run", help="run pipeline roles until SIGINT/SIGTERM")
    run.add_argument("role", choices=["all", "router", "slm", "llm", "sink"])
    produce = sub.add_parser("produce", help="send queries to the live topic")
    produce.add_argument("text", nargs="?")
    produce.add_argument("--file", type=Path, help="JSONL: each line sent unmodified")
    produce.add_argument("--tenant", default="default")
    produce.add_argument("--max-tokens", type=int, default=256)
    produce.add_argument("--id")
    backfill = sub.add_parser(
        "backfill", help="run a backfill job (or: backfill status NAME | list | export NAME)",
        description="Send SOURCE's queries to the backfill lane as job NAME and follow their "
        "answers. Run the same command again to resume: rows handled already are not sent again. "
        "Also: `backfill status NAME [--json]`, `backfill list [--json]`, "
        "`backfill export NAME --format parquet|csv|jsonl [--out FILE]`.")
    backfill.add_argument("source", nargs="?",
                          help="a .jsonl, .csv, .tsv or .parquet file; or status, list, export")
    backfill.add_argument("name", nargs="?", help="the job, for status and export")
    backfill.add_argument("--job", help="the job's name (default: the file's name)")
    backfill.add_argument("--from-sql", metavar="SELECT",
                          help="send the rows of a SELECT over pointsman.results instead of a file")
    backfill.add_argument("--rate", type=float, metavar="Q/S", help="queries per second at most")
    backfill.add_argument("--budget-usd", type=float, metavar="X",
                          help="stop sending once the job's answers cost this much")
    backfill.add_argument("--format", dest="file_format",
                          choices=["jsonl", "csv", "tsv", "parquet"],
                          help="the file's format (default: from its extension); for export: "
                               "parquet, csv or jsonl")
    backfill.add_argument("--window", type=int, default=1000,
                          help="queries in flight at most (sent, not answered)")
    backfill.add_argument("--no-wait", action="store_true",
                          help="return once every row is sent; `backfill status` follows answers")
    backfill.add_argument("--no-cache", action="store_true",
                          help="answer every query afresh, never from a cache (a re-run under a "
                               "new model or policy)")
    backfill.add_argument("--out", type=Path, help="export: the file to write")
    backfill.add_argument("--json", action="store_true", help="status and list: as JSON")
    sql = sub.add_parser("sql", help="run SQL against ClickHouse")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report = sub.add_parser("report", help="per-route counts, latency, cache hits, cost")
    report.add_argument("--json", action="store_true")
    report.add_argument("--png", type=Path, metavar="FILE",
                        help="also draw latency per route, cost against all-LLM, route share and "
                             "cache hit rate over time into FILE")
    report.add_argument("--html", type=Path, metavar="FILE",
                        help="also write the report and those plots as one HTML page")
    demo = sub.add_parser("demo", help="start everything, push a sample workload, print the report")
    demo.add_argument("--keep-running", action="store_true", help="leave broker and roles up")
    bench = sub.add_parser("bench", help="benchmarks (see BENCHMARKS.md)")
    bench.add_argument("what", choices=["router", "slm", "cache", "lanes", "sink"])
    bench.add_argument("--rows", type=int, default=200_000, help="sink: results to ingest")
    bench.add_argument("--messages", type=int, default=100_000, help="router: messages to route")
    bench.add_argument("--batches", default="1,8,32", help="slm: batch sizes")
    bench.add_argument("--tokens", type=int, default=32, help="slm: new tokens per prompt")
    bench.add_argument("--threads", type=int, default=2, help="slm: onnxruntime threads")
    bench.add_argument("--kernels", action="store_true",
                       help="slm: time the model's weight MatMuls alone, fp32 vs int8 kernels")
    bench.add_argument("--live", type=int, default=100, help="lanes: live queries per phase")
    bench.add_argument("--rate", type=float, default=10.0, help="lanes: live queries per second")
    bench.add_argument("--backfill", type=int, default=2000, help="lanes: backfill queries")
    bench.add_argument("--latency-ms", type=float, default=200.0,
                       help="lanes: how long each stand-in upstream call takes")
    bench.add_argument("--track", choices=["llm", "slm", "both"], default="llm",
                       help="lanes: the track the queries are routed to")
    bench.add_argument("--json", action="store_true")
    evaluate = sub.add_parser("eval", help="quality on labelled data: semantic cache, router, SLM "
                              "confidence, or the live pipeline end to end")
    evaluate.add_argument("what", choices=["cache", "router", "confidence", "pipeline"])
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--labels", type=Path, default=None,
                          help="confidence: SLM labels file (default: the shipped slm_labels.jsonl.gz)")
    evaluate.add_argument("--set", dest="eval_set", choices=["mmlu", "gsm8k"], default=None,
                          help="pipeline: held-out labelled prompts of this set")
    evaluate.add_argument("--file", dest="eval_file", type=Path, default=None,
                          help="pipeline: your own labelled prompts (JSONL: text, choices, answer, "
                          "strong_correct)")
    evaluate.add_argument("--limit", type=int, default=None,
                          help="pipeline: a fixed sample of N prompts spanning the subjects")
    train = sub.add_parser("train", help="refit the router (or the semantic cache's per-tenant "
                           "thresholds) and write the file the router reloads")
    train.add_argument("what", choices=["router", "semantic"])
    train.add_argument("--from-clickhouse", action="store_true",
                       help="add the judged outcomes in pointsman.evaluations (shadow evaluation); "
                       "semantic: required")
    train.add_argument("--out", type=Path, default=None, help="default: POINTSMAN_ROUTER_MODEL; "
                       "semantic: <data dir>/semantic_thresholds.json")
    train.add_argument("--precision", type=float, default=0.95,
                       help="semantic: judged precision to keep (its Wilson lower bound)")
    train.add_argument("--min-judged", type=int, default=100,
                       help="semantic: tenants with fewer judged hits keep the global threshold")
    train.add_argument("--json", action="store_true")
    label = sub.add_parser("label", help="label our own SLM right/wrong on the train splits (package data)")
    label.add_argument("what", choices=["slm"])
    label.add_argument("--set", dest="sets", choices=["mmlu", "gsm8k", "all"], default="all")
    label.add_argument("--limit", type=int, default=None, help="a fixed sample of N per set")
    label.add_argument("--out", type=Path, default=None)
    quantize = sub.add_parser("quantize", help="int8-quantise a model dir; print size, speed, agreement")
    quantize.add_argument("src", type=Path)
    quantize.add_argument("dst", type=Path)
    quantize.add_argument("--method", choices=["nbits", "q4", "w8a8"], default="nbits",
                          help="nbits: int8 weights (the shipped form); q4: 4-bit on a Q4_1 GGUF's own grid; "
                          "w8a8: SmoothQuant, int8 activations too")
    quantize.add_argument("--block-size", type=int, choices=[16, 32, 64, 128, 256], default=None,
                          help="nbits: weights (and int8-compute activations) per block of this many "
                          "(default 32, the GGUF's Q8_0 grid)")
    models = sub.add_parser("models", help="prepare the bundled SLM")
    models.add_argument("action", choices=["prepare"])
    models.add_argument("--fp32", action="store_true", help="skip int8 quantisation")
    models.add_argument("--force", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = Config.from_env()
    except (PointsmanError, ValueError) as exc:  # a bad setting: say which, no traceback
        print(f"pointsman: {redact(str(exc))}", file=sys.stderr)
        return 2
    register_secret(*config.secrets())
    install_redaction()
    try:
        return _dispatch(args, config)
    except PointsmanError as exc:
        print(f"pointsman: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    from pipeline import commands

    match args.command:
        case "up":
            commands.up(config)
        case "down":
            commands.down(config)
        case "status":
            commands.status(config)
        case "run":
            commands.run(config, args.role)
        case "produce":
            commands.produce(config, args.text, args.file, args.tenant, args.max_tokens, args.id)
        case "backfill":
            return _backfill(args, config)
        case "sql":
            columns, rows = commands.sql(config, args.query)
            _print_rows(columns, rows, args.format)
        case "report":
            commands.report(config, as_json=args.json, png=args.png, html=args.html)
        case "demo":
            return commands.demo(config, keep_running=args.keep_running)
        case "bench" if args.what == "router":
            commands.bench_router(config, messages=args.messages, as_json=args.json)
        case "bench" if args.what == "lanes":
            from pipeline.bench_lanes import LanesBench, run_bench_lanes

            return run_bench_lanes(config, commands.console, LanesBench(
                live=args.live, rate=args.rate, backfill=args.backfill,
                latency_ms=args.latency_ms, track=args.track), as_json=args.json)
        case "bench" if args.what == "sink":
            from pipeline.bench_sink import run_bench_sink

            return run_bench_sink(config, commands.console, rows=args.rows, as_json=args.json)
        case "bench" if args.what == "cache":
            from pipeline.eval.bench_cache import run_bench_cache

            return run_bench_cache(commands.console, as_json=args.json)
        case "eval" if args.what == "pipeline":
            return _eval_pipeline(args, config)
        case "eval" if args.what == "confidence":
            from pipeline.eval.confidence_eval import run_eval_confidence
            from pipeline.eval.label_slm import LABELS_FILE

            return run_eval_confidence(commands.console, as_json=args.json,
                                       threshold=config.slm_escalate_below, path=args.labels or LABELS_FILE)
        case "eval":
            from pipeline.eval.cache_eval import run_eval_cache
            from pipeline.eval.router_eval import run_eval_router

            run = run_eval_cache if args.what == "cache" else run_eval_router
            return run(commands.console, as_json=args.json)
        case "bench":
            batches = tuple(int(b) for b in args.batches.split(","))
            return commands.bench_slm(config, batches=batches, tokens=args.tokens, threads=args.threads,
                                      as_json=args.json, kernels=args.kernels)
        case "train" if args.what == "semantic":
            return _train_semantic(args, config)
        case "train":
            from pipeline.train_router import run_train_router

            return run_train_router(commands.console, config.dsn, args.out or config.router_model,
                                    from_clickhouse=args.from_clickhouse,
                                    target=config.quality_target or 0.95, as_json=args.json)
        case "label":
            from pipeline.eval.label_slm import LABELS_FILE, SETS, run_label_slm

            sets = SETS if args.sets == "all" else (args.sets,)
            return run_label_slm(commands.console, config.slm_model, sets=sets, limit=args.limit,
                                 out=args.out or LABELS_FILE, threads=config.slm_threads)
        case "quantize":
            return commands.quantize(args.src, args.dst, method=args.method, block_size=args.block_size)
        case "models":
            commands.prepare_model(config, quantize=not args.fp32, force=args.force)
    return 0


def _train_semantic(args: argparse.Namespace, config: Config) -> int:
    from pipeline import commands
    from pipeline.semantic.cache import parse_thresholds
    from pipeline.train_semantic import run_train_semantic

    if not args.from_clickhouse:
        raise ConfigError("train semantic learns from judged hits only: add --from-clickhouse")
    if not 0.0 < args.precision < 1.0 or args.min_judged < 1:
        raise ConfigError("train semantic: --precision must be in (0, 1), --min-judged at least 1")
    return run_train_semantic(commands.console, config.dsn, args.out or config.semantic_thresholds_file,
                              global_threshold=config.semantic_threshold,
                              static=parse_thresholds(config.semantic_tenant_thresholds),
                              target=args.precision, min_judged=args.min_judged, as_json=args.json)


def _backfill(args: argparse.Namespace, config: Config) -> int:
    from pipeline import commands

    if args.source == "list":
        return commands.backfill_list(config, as_json=args.json)
    if args.source in ("status", "export"):
        if not args.name:
            raise ConfigError(f"backfill {args.source}: give the job's name")
        if args.source == "status":
            return commands.backfill_status(config, args.name, as_json=args.json)
        if args.file_format not in ("parquet", "csv", "jsonl"):
            raise ConfigError("backfill export: give --format parquet|csv|jsonl")
        return commands.backfill_export(config, args.name, args.file_format, args.out)
    if (args.source is None) == (args.from_sql is None):
        raise ConfigError("backfill: give a SOURCE file or --from-sql \"SELECT ...\" (one of them)")
    if args.from_sql is not None and not args.job:
        raise ConfigError("backfill --from-sql: give the job a name with --job")
    for flag, value in (("--rate", args.rate), ("--budget-usd", args.budget_usd)):
        if value is not None and not value > 0:
            raise ConfigError(f"backfill {flag} must be positive, not {value}")
    if args.window < 1:
        raise ConfigError("backfill --window must be at least 1")
    from pipeline.validate import JOB_PATTERN

    if args.job is not None and not JOB_PATTERN.fullmatch(args.job):
        raise ConfigError(f"bad job name {args.job!r}: want 1-128 of [A-Za-z0-9_.-]")
    return commands.backfill(config, args.source or "", job=args.job, rate=args.rate,
                             budget_usd=args.budget_usd, file_format=args.file_format,
                             from_sql=args.from_sql, wait=not args.no_wait, window=args.window,
                             cache=not args.no_cache)


def _eval_pipeline(args: argparse.Namespace, config: Config) -> int:
    from pipeline.commands import console
    from pipeline.eval.pipeline_eval import STRONG_MODEL, run_eval_pipeline

    if (args.eval_set is None) == (args.eval_file is None):
        console.print("pointsman eval pipeline: give --set mmlu|gsm8k or --file F.jsonl (one of them)")
        return 2
    # the learned router unless POINTSMAN_ROUTING_POLICY names another: the eval judges it
    policy = os.environ.get("POINTSMAN_ROUTING_POLICY") or "learned"
    # the LLM track replays the strong model's answers: priced as it, unless a model is named
    llm_model = os.environ.get("POINTSMAN_LLM_MODEL") or STRONG_MODEL
    # its operating point: POINTSMAN_QUALITY_TARGET, else 0.95 unless a share is asked for instead
    target = config.quality_target
    if target is None and not os.environ.get("POINTSMAN_SLM_SHARE"):
        target = 0.95
    return run_eval_pipeline(config, console, set_name=args.eval_set, file=args.eval_file,
                             limit=args.limit, policy=policy, as_json=args.json, llm_model=llm_model,
                             quality_target=target)


def _print_rows(columns: list[str], rows: list, fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        import msgspec

        for row in rows:
            line = msgspec.json.encode(dict(zip(columns, row, strict=True)), enc_hook=str)
            sys.stdout.write(line.decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for column in columns:
            table.add_column(_plain(column), overflow="fold")  # wrap long values, never cut them
        for row in rows:
            table.add_row(*(_plain(v) for v in row))
        Console().print(table)


def _plain(value: object) -> Text:
    """A cell as inert text: stored data is never read as rich markup, and control or
    formatting characters (escape sequences, bidi overrides) show as escapes instead of
    reaching the terminal. csv and json stay byte-faithful: they are data for other programs
    (json escapes control characters itself)."""
    from rich.text import Text

    return Text("".join(_visible(c) for c in str(value)))


def _hidden(char: str) -> bool:
    return char != "\n" and unicodedata.category(char) in ("Cc", "Cf")


def _visible(char: str) -> str:
    if not _hidden(char):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


if __name__ == "__main__":
    sys.exit(main())
