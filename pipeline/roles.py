"""Process roles (router, slm, llm, sink): each one starts, then runs until SIGINT/SIGTERM.

Starting is kept apart from running. Whatever a role needs before it can take a message (topics,
the SLM's weights, an upstreams file, the database) is prepared first; a failure there is a
"cannot start": one line with the reason, exit code EXIT_CANNOT_START, and under the supervisor
(pipeline/supervisor.py) a retry with backoff while the other roles keep running. What a
down role would have consumed waits in Kafka.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pipeline.config import Config
from topics.errors import ConfigError, PointsmanError
from topics.redact import redact
from workers.loop import StopFlag

if TYPE_CHECKING:
    from workers.answered import AnsweredIndex
    from workers.llm_worker import LlmWorkerSettings
    from workers.slm_worker import Generator, SlmWorkerSettings

log = logging.getLogger(__name__)

ROLES = ("router", "slm", "llm", "sink")
EXIT_CANNOT_START = 3
# set by the supervisor for each child: where a role that cannot start writes its one-line reason
REASON_FILE_ENV = "POINTSMAN_ROLE_REASON_FILE"

Run = Callable[[StopFlag], None]


class CannotStart(ConfigError):
    """A role could not get ready (missing model, unreadable settings, broker away)."""


def run_role(role: str, config: Config) -> None:
    """Prepare one role, then run it in this process until SIGINT/SIGTERM."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: {', '.join(ROLES)}")
    try:
        run = _prepare(role, config)
    except Exception as exc:  # any start failure is reported the same way
        _cannot_start(role, exc)
    stop = StopFlag()
    if role != "router":  # Faust installs its own handlers
        stop.install_signal_handlers()
    run(stop)


def _prepare(role: str, config: Config) -> Run:
    from topics.admin import ensure_topics

    prepare = {"router": _prepare_router, "slm": _prepare_slm, "llm": _prepare_llm,
               "sink": _prepare_sink}[role]
    run = prepare(config)  # local things first: a missing model needs no broker to be reported
    # idempotent, so any role can start first against a fresh broker (compose, Kubernetes)
    ensure_topics(config.bootstrap, config.topics.specs(config.partitions))
    return run


def _prepare_router(config: Config) -> Run:
    from pipeline.router import run_router

    settings = config.router()
    return lambda _stop: run_router(settings)  # Faust stops on SIGINT/SIGTERM itself


def _cannot_start(role: str, exc: Exception) -> NoReturn:
    reason = one_line(exc)  # redacted: an error may quote a DSN or a key, never pass those on
    if not isinstance(exc, PointsmanError):  # a bug, not a setup problem: keep its trace for -v
        log.info("role %s failed to start", role, exc_info=exc)
    reason_file = os.environ.get(REASON_FILE_ENV)
    if reason_file:  # supervised: the supervisor says it, once, with its retry delay
        Path(reason_file).write_text(reason + "\n", encoding="utf-8")
        sys.exit(EXIT_CANNOT_START)
    raise CannotStart(f"role {role} cannot start: {reason}") from None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, PointsmanError):
        text = f"{type(exc).__name__}: {text}"
    return redact(text)[:500]  # redact before cutting: a cut key would no longer match


def ensure_model(config: Config, say: Callable[[str], None] = print) -> None:
    """The bundled SLM is converted on first use; a user's own model dir must already exist."""
    from pipeline.config import DEFAULT_MODEL

    if (config.slm_model / "model.onnx").exists():
        return
    if config.slm_model.name != DEFAULT_MODEL:
        raise ConfigError(f"no model.onnx in POINTSMAN_SLM_MODEL={config.slm_model}")
    say("preparing the SLM (SmolLM2-135M-Instruct -> ONNX int8), once ...")
    from workers.slm.prepare import prepare_smollm2

    prepare_smollm2(config.slm_model.parent)


def _prepare_slm(config: Config) -> Run:
    from workers.slm.engine import SlmEngine

    ensure_model(config, say=lambda text: print(f"slm: {text}", flush=True))
    engine = SlmEngine(config.slm_model, threads=config.slm_threads)
    settings = config.slm()
    return lambda stop: serve_slm(settings, stop, engine)


def serve_slm(settings: SlmWorkerSettings, stop: StopFlag, engine: Generator) -> None:
    """The SLM worker, told what the results topic already answers (see workers/answered.py)."""
    from workers.slm_worker import run_slm_worker

    with answered_index(settings) as answered:
        run_slm_worker(settings, stop, engine, answered=answered)


def serve_llm(settings: LlmWorkerSettings, stop: StopFlag) -> None:
    """The LLM worker, told what is answered already, with the judge for its shadow calls."""
    from pipeline.eval.judge import AnswerJudge
    from workers.llm_worker import run_llm_worker

    judge = AnswerJudge(settings.shadow.judge, settings.shadow.judge_embedder)
    with answered_index(settings) as answered:
        run_llm_worker(settings, stop, answered=answered, judge=judge)


@contextlib.contextmanager
def answered_index(settings: SlmWorkerSettings | LlmWorkerSettings) -> Iterator[AnsweredIndex]:
    """An index of what the results topic already answers, fed while the worker runs."""
    from pipeline.answered_feed import answered_feed

    answered, feed = answered_feed(settings.bootstrap, settings.topics.results,
                                   lookback_s=settings.answered_lookback_s,
                                   warmup_s=settings.answered_warmup_s)
    try:
        yield answered
    finally:
        feed.stop()


# The stand-in runs one model, one generation at a time. A client built for a remote API (16
# calls at once, 30 s each) queues 15 of them inside it, where the wait counts against their
# timeout: calls time out, the breaker opens, queries fail. So the client is sized to it: one
# call at a time (the queue stays in the worker and in Kafka, where waiting costs nothing), and
# a timeout for one slow CPU generation instead of a network round trip.
STANDIN_CONCURRENCY = 1
STANDIN_TIMEOUT_S = 180.0


def sized_for_standin(settings: LlmWorkerSettings) -> LlmWorkerSettings:
    """The client settings for a serial local stand-in (see the note above)."""
    upstreams = tuple(dataclasses.replace(u, timeout_s=max(u.timeout_s, STANDIN_TIMEOUT_S))
                      for u in settings.llm.upstreams)
    llm = dataclasses.replace(settings.llm, max_concurrency=STANDIN_CONCURRENCY, upstreams=upstreams)
    return dataclasses.replace(settings, llm=llm)


def _prepare_llm(config: Config) -> Run:
    from workers.llm_standin import STANDIN_NOTICE, StandinLLM, StandinServer

    if config.llm_base_url or config.llm_upstreams_file:
        settings = config.llm()
        return lambda stop: serve_llm(settings, stop)
    from workers.slm.engine import SlmEngine

    # no upstream: serve the SLM as a stand-in. Without the model this waits (cannot start, then
    # retried) rather than echo prompts back as answers: on a first `run all` the slm role is
    # still preparing the bundled model, and the stand-in starts once it is there.
    if not (config.slm_model / "model.onnx").exists():
        raise ConfigError(f"no POINTSMAN_LLM_BASE_URL, and no model.onnx in {config.slm_model} "
                          "for the local stand-in yet (the slm role prepares the bundled one)")
    engine = SlmEngine(config.slm_model, threads=1)
    model = f"standin-{engine.model_name}"
    server = StandinServer(StandinLLM(model=model, engine=engine)).start()
    settings = sized_for_standin(config.llm(server.base_url))
    print(f"LLM track: {STANDIN_NOTICE} at {server.base_url}, model {model} "
          "(set POINTSMAN_LLM_BASE_URL for a real remote LLM)", flush=True)

    def run(stop: StopFlag) -> None:
        try:
            serve_llm(settings, stop)
        finally:
            server.stop()

    return run


def _prepare_sink(config: Config) -> Run:
    from infra.clickhouse import Database, connect, is_embedded, migrate
    from infra.sql_http_server import QueryServer
    from pipeline.sink import run_sink

    database = Database(connect(config.dsn))
    migrate(database.client)
    settings = config.sink()
    endpoint = config.sql_endpoint()

    def run(stop: StopFlag) -> None:
        # started only once the role runs: an endpoint is never left behind by a failed start
        server = (QueryServer(database, config.dsn, endpoint).start()
                  if is_embedded(config.dsn) else None)
        try:
            run_sink(settings, database, stop)
        finally:
            if server is not None:
                server.stop()

    return run
