"""Process roles (router, slm, llm, sink) and the supervisor that runs them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from pipeline.config import Config
from workers.loop import StopFlag

ROLES = ("router", "slm", "llm", "sink")


def run_role(role: str, config: Config) -> None:
    """Run one role in this process until SIGINT/SIGTERM."""
    from topics.admin import ensure_topics

    # idempotent, so any role can start first against a fresh broker (compose, Kubernetes)
    ensure_topics(config.bootstrap, config.topics.specs(config.partitions))

    if role == "router":
        from pipeline.router import run_router

        run_router(config.router())
        return
    stop = StopFlag()
    stop.install_signal_handlers()
    if role == "slm":
        from workers.slm_worker import run_slm_worker

        run_slm_worker(config.slm(), stop)
    elif role == "llm":
        _run_llm(config, stop)
    elif role == "sink":
        _run_sink(config, stop)
    else:
        raise ValueError(f"unknown role {role!r}: {', '.join(ROLES)}")


def _run_llm(config: Config, stop: StopFlag) -> None:
    from workers.llm_standin import STANDIN_NOTICE, StandinLLM, StandinServer
    from workers.llm_worker import run_llm_worker

    server = None
    base_url = config.llm_base_url
    if not base_url and not config.llm_upstreams_file:
        engine, model = None, "standin-echo"
        if (config.slm_model / "model.onnx").exists():
            from workers.slm.engine import SlmEngine

            engine = SlmEngine(config.slm_model, threads=1)
            model = f"standin-{engine.model_name}"
        server = StandinServer(StandinLLM(model=model, engine=engine)).start()
        base_url = server.base_url
        print(f"LLM track: {STANDIN_NOTICE} at {base_url}, model {model} "
              "(set POINTSMAN_LLM_BASE_URL for a real remote LLM)", flush=True)
    try:
        run_llm_worker(config.llm(base_url), stop)
    finally:
        if server is not None:
            server.stop()


def _run_sink(config: Config, stop: StopFlag) -> None:
    from infra.clickhouse import Database, connect, is_embedded, migrate
    from infra.query_server import QueryServer
    from pipeline.sink import run_sink

    database = Database(connect(config.dsn))
    migrate(database.client)
    server = QueryServer(database, config.dsn).start() if is_embedded(config.dsn) else None
    try:
        run_sink(config.sink(), database, stop)
    finally:
        if server is not None:
            server.stop()


class Supervisor:
    """Runs each role as a child process; restarts one that dies; stops all on a signal."""

    def __init__(self, roles: Sequence[str]) -> None:
        self.roles = list(roles)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restart_delay: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self._stopping = False

    def spawn(self, role: str) -> None:
        self.started_at[role] = time.monotonic()
        self.children[role] = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", role], env=os.environ.copy()
        )

    def start(self) -> None:
        for role in self.roles:
            self.spawn(role)

    def watch(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_stop())
        while not self._stopping:
            for role, child in list(self.children.items()):
                code = child.poll()
                if code is not None and not self._stopping:
                    # a role that dies right after starting is misconfigured: back off, do not spin
                    quick = time.monotonic() - self.started_at[role] < 30
                    delay = min(self.restart_delay.get(role, 0.5) * 2, 60.0) if quick else 1.0
                    self.restart_delay[role] = delay
                    print(f"role {role} exited with {code}; restarting in {delay:.0f}s",
                          file=sys.stderr, flush=True)
                    self._sleep(delay)
                    if not self._stopping:
                        self.spawn(role)
            time.sleep(0.2)
        self.stop()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.1)

    def request_stop(self) -> None:
        self._stopping = True

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
