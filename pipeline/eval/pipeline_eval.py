"""`pointsman eval pipeline`: held-out labelled prompts end to end through the live pipeline.

Like the demo it starts the local broker (if it is not running) and every role, but the LLM track
is the answer book (workers/answer_book.py): a local stand-in on the OpenAI protocol answering as
the strong model did by its recorded correctness, so all-LLM quality is known without a remote
model. Each prompt goes in three times, under three tenants of this run: routed by the configured
policy, forced to the SLM (never escalated), forced to the LLM. The semantic cache is off: it would
answer the forced tenants' copies and this measures routing. Every answer is read back from
ClickHouse (pointsman.results FINAL) and scored (pipeline/eval/pipeline_score.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infra import kafka
from infra.kafka_io import Outgoing, OutputProducer
from infra.query_server import Reader, wait_for_endpoint
from pipeline.config import Config
from pipeline.eval.labelled import LabelledPrompt, labelled_set, read_file, strong_response
from pipeline.eval.pipeline_score import ARMS, Answered, Outcome, curve, sample, summary
from pipeline.roles import ROLES, ensure_model
from pipeline.supervisor import Supervisor
from topics.admin import ensure_topics
from topics.codec import encode
from topics.errors import PointsmanError
from topics.schemas import Query
from workers.answer_book import AnswerBook, BookEntry
from workers.llm_standin import StandinLLM, StandinServer

LLM_TRACK = "local stand-in answering by the strong model's recorded correctness"
HELD_OUT = {
    "mmlu": "held out: MMLU test subjects (split by subject); the router and the SLM labels are "
            "trained on the train subjects only",
    "gsm8k": "held out: GSM8K test half (split by a hash of the prompt); the router and the SLM "
             "labels are trained on the train half only",
    "file": "your own prompts: the shipped router was not trained on them",
}
SEMANTIC_NOTE = "semantic cache off for this run (it measures routing)"
STANDIN_MODEL = "standin-answer-book"
# the book replays this model's recorded correctness, so the LLM track is priced as it by default
STRONG_MODEL = "gpt-4-1106-preview"


@dataclass(frozen=True)
class EvalRun:
    name: str  # mmlu, gsm8k, or the file's name
    prompts: list[LabelledPrompt]
    policy: str
    timeout_s: float
    llm_model: str = STRONG_MODEL  # what the LLM track is priced as
    quality_target: float | None = None  # the learned policy's operating point (None: share mode)


def choose(set_name: str | None, file: Path | None, limit: int | None) -> tuple[str, list[LabelledPrompt]]:
    """The held-out prompts of a set (never its train split), or a user's file; `limit` samples."""
    if file is not None:
        return file.name, sample(read_file(file), limit)
    return str(set_name), sample(labelled_set(str(set_name), "test"), limit)


def timeout_for(prompts: Sequence[LabelledPrompt]) -> float:
    """Room to start every role, then per prompt: two SLM answers (policy, forced) on a CPU."""
    return 240.0 + sum(4.0 if p.choices else 30.0 for p in prompts)


def book_for(prompts: Sequence[LabelledPrompt]) -> AnswerBook:
    """Correct where the strong model was (or it is unknown); GPT-4's recorded GSM8K responses."""
    responses = strong_response("") if any(p.dataset == "gsm8k" for p in prompts) else {}
    return AnswerBook(BookEntry(p.text, p.choices, p.answer, p.strong_correct is not False,
                                responses.get(p.question)) for p in prompts)


def tenants(run_id: str) -> dict[str, str]:
    """Tenants unique to the run: nothing cached or answered by an earlier run can answer them."""
    return {arm: f"eval-{run_id}-{arm}" for arm in ARMS}


def child_env(config: Config, run: EvalRun, names: dict[str, str], base_url: str) -> dict[str, str]:
    routes = ",".join(filter(None, [config.tenant_routes, f"{names['slm']}=slm", f"{names['llm']}=llm"]))
    return {
        "POINTSMAN_ROUTING_POLICY": run.policy,
        "POINTSMAN_LLM_MODEL": run.llm_model,  # the book's answers are priced as this model's
        "POINTSMAN_QUALITY_TARGET": "" if run.quality_target is None else str(run.quality_target),
        "POINTSMAN_TENANT_ROUTES": routes,
        "POINTSMAN_SEMANTIC_CACHE": "off",
        "POINTSMAN_LLM_BASE_URL": base_url,  # the answer book, not a configured upstream
        "POINTSMAN_LLM_UPSTREAMS_FILE": "",
        "POINTSMAN_LLM_API_KEY": "",  # a real key is never sent to the stand-in
    }


def queries(prompts: Sequence[LabelledPrompt], run_id: str, names: dict[str, str]) -> list[Query]:
    now = time.time()
    return [Query(id=f"eval-{run_id}-{i}-{arm}", tenant=names[arm], text=p.text, max_tokens=p.max_tokens,
                  metadata={"eval": run_id}, submitted_at=now)
            for i, p in enumerate(prompts) for arm in ARMS]


def send(config: Config, sent: Sequence[Query]) -> None:
    """Produced and delivered; the producer is gone on return (before the broker may stop)."""
    producer = OutputProducer(config.bootstrap)
    producer.send([Outgoing(config.topics.queries, q.id.encode() if q.id else None, encode(q))
                   for q in sent])
    producer.deliver()


def _rows(reader: Reader, run_id: str) -> dict[str, Answered]:
    sql = ("SELECT query_id, route, answer, cost_usd, error FROM pointsman.results FINAL "
           f"WHERE query_id LIKE 'eval-{run_id}-%'")
    return {str(qid): Answered(str(route), str(answer), float(cost), str(error or ""))
            for qid, route, answer, cost, error in reader.query(sql)[1]}


def wait_for_results(config: Config, run_id: str, expected: int, timeout_s: float,
                     say: Callable[[str], None]) -> dict[str, Answered]:
    deadline = time.monotonic() + timeout_s
    reader = wait_for_endpoint(config.dsn, timeout_s=min(120.0, timeout_s))
    rows: dict[str, Answered] = {}
    last = -1
    while time.monotonic() < deadline:
        try:
            rows = _rows(reader, run_id)
        except PointsmanError as exc:  # the sink may be restarting
            say(f"  waiting for the sink: {exc}")
            reader = wait_for_endpoint(config.dsn, timeout_s=120)
            continue
        if len(rows) != last:
            say(f"  answered {len(rows)}/{expected}")
            last = len(rows)
        if len(rows) >= expected:
            break
        time.sleep(1.0)
    return rows


def outcomes(prompts: Sequence[LabelledPrompt], run_id: str, rows: dict[str, Answered]) -> list[Outcome]:
    return [Outcome(p, *(rows.get(f"eval-{run_id}-{i}-{arm}") for arm in ARMS))
            for i, p in enumerate(prompts)]


def router_scores(config: Config, prompts: Sequence[LabelledPrompt]) -> dict[str, list[float]]:
    """Difficulty scores of the router trained on our SLM's labels (the one the learned policy
    loads) and of the one trained on RouteLLM's labels: their curves on the same prompts."""
    from pipeline.routing.scorer import (
        MODEL_FILE,
        ROUTELLM_MODEL_FILE,
        DifficultyScorer,
        GatedModel,
        load_model,
    )
    from pipeline.semantic.embedders import StaticEmbedder

    grounded = config.router_model if config.router_model.is_file() else MODEL_FILE
    texts = [p.text for p in prompts]
    embedder = StaticEmbedder()
    out = {}
    for name, path in (("our_slm_labels", grounded), ("routellm_labels", ROUTELLM_MODEL_FILE)):
        model = load_model(path)
        scores = DifficultyScorer(embedder, model).score(texts)
        keys = model.routing_keys(scores, texts) if isinstance(model, GatedModel) else scores
        out[name] = [float(k) for k in keys]  # what the policy ranks by at a quality target
    return out


def run_pipeline(config: Config, run: EvalRun, console: Console) -> tuple[dict[str, object], bool]:
    """Start everything, send, wait, score: (the report, whether every query got a result)."""
    say = console.print
    kafka_cfg = config.kafka()
    was_running = kafka.status(kafka_cfg).running
    broker = kafka.start(kafka_cfg)
    say(f"Kafka {broker.version} (KRaft) at {broker.bootstrap}")
    ensure_topics(config.bootstrap, config.topics.specs(config.partitions))
    ensure_model(config, say=say)
    run_id = uuid.uuid4().hex[:8]
    names = tenants(run_id)
    book = book_for(run.prompts)
    server = StandinServer(StandinLLM(model=STANDIN_MODEL, answerer=book)).start()
    say(f"LLM track: {LLM_TRACK} at {server.base_url} (priced as {run.llm_model}); "
        f"SLM: {config.slm_model}; policy: {run.policy}; {SEMANTIC_NOTE}")
    supervisor = Supervisor(ROLES, env=child_env(config, run, names, server.base_url))
    supervisor.start()
    try:
        sent = queries(run.prompts, run_id, names)
        send(config, sent)
        say(f"sent {len(run.prompts)} prompts x {len(ARMS)} tenants ({', '.join(names.values())}); "
            f"waiting up to {run.timeout_s:.0f} s ...")
        rows = wait_for_results(config, run_id, len(sent), run.timeout_s, say)
    finally:
        supervisor.stop()
        server.stop()
        if not was_running:
            kafka.stop(kafka_cfg)
    scored = outcomes(run.prompts, run_id, rows)
    report = summary(run.name, scored)
    report["curves"] = {name: curve(scores, scored, steps=21)
                        for name, scores in router_scores(config, run.prompts).items()}
    report.update(policy=run.policy, quality_target=run.quality_target, llm_track=LLM_TRACK,
                  llm_priced_as=run.llm_model,
                  semantic_cache="off", run_id=run_id, unknown_to_book=book.unknown,
                  train_split=HELD_OUT.get(run.name, HELD_OUT["file"]))
    return report, len(rows) >= len(sent)


def run_eval_pipeline(config: Config, console: Console, *, set_name: str | None, file: Path | None,
                      limit: int | None, policy: str, as_json: bool, llm_model: str = STRONG_MODEL,
                      quality_target: float | None = None) -> int:
    name, prompts = choose(set_name, file, limit)
    if not prompts:
        console.print("no prompts to evaluate")
        return 1
    run = EvalRun(name, prompts, policy, timeout_for(prompts), llm_model, quality_target)
    status = Console(stderr=True) if as_json else console
    report, complete = run_pipeline(config, run, status)
    if as_json:
        print(json.dumps(report))
    else:
        render(report, console)
    if not complete:
        status.print("[red]some queries got no result before the timeout[/red]")
    return 0 if complete else 1


def _pct(value: object) -> str:
    return f"{float(value):.1%}"  # type: ignore[arg-type]


def render(report: dict[str, object], console: Console) -> None:
    table = Table(title=f"eval pipeline: {report['set']}, {report['prompts']} prompts, "
                        f"policy {report['policy']}")
    for column in ("answers", "quality", "cost USD", "cost cut", "SLM share"):
        table.add_column(column, justify="right" if column != "answers" else "left")
    table.add_row("routed by the policy", _pct(report["quality"]), f"{report['cost_usd']:.6f}",
                  _pct(report["cost_cut"]), _pct(report["slm_share"]))
    table.add_row("all LLM", _pct(report["all_llm_quality"]), f"{report['all_llm_cost_usd']:.6f}",
                  _pct(0.0), _pct(0.0))
    table.add_row("all SLM", _pct(report["all_slm_quality"]), f"{report['all_slm_cost_usd']:.6f}",
                  _pct(report["all_slm_cost_cut"]), _pct(1.0))
    table.add_row("perfect router, 95% quality", "", f"{report['oracle_cost_usd']:.6f}",
                  _pct(report["oracle_cost_cut"]), "")
    console.print(table)
    routes = Table(title="policy tenant by route")
    for column in ("route", "queries", "quality"):
        routes.add_column(column)
    for route, row in report["quality_by_route"].items():  # type: ignore[attr-defined]
        routes.add_row(route, str(row["queries"]), _pct(row["quality"]))
    console.print(routes)
    curves: dict = report["curves"]  # type: ignore[assignment]
    points = Table(title="routing alone by each router's score (this run's forced answers): quality / cut")
    points.add_column("SLM share", justify="right")
    for name in curves:
        points.add_column(f"router on {name.replace('_', ' ')}", justify="right")
    for i, point in enumerate(next(iter(curves.values()))):
        points.add_row(_pct(point["slm_share"]),
                       *(f"{_pct(c[i]['quality'])} / {_pct(c[i]['cost_cut'])}" for c in curves.values()))
    console.print(points)
    console.print(f"escalated by the SLM: {report['escalated']}; errors {report['errors']}; "
                  f"missing {report['missing']}")
    console.print(f"LLM track: {report['llm_track']} (priced as {report['llm_priced_as']})")
    console.print(f"{report['train_split']}; {SEMANTIC_NOTE}")
