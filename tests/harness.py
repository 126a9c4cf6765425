"""Test harness: role processes started through the real CLI, and ClickHouse polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.query_server import Reader, wait_for_endpoint
from topics.names import Topics

ROOT = Path(__file__).resolve().parents[1]


def free_port_pair() -> int:
    """A port p with p and p + 1 free (broker and controller): two test runs on one machine must
    not collide on a fixed port."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


# POINTSMAN_TEST_KAFKA_PORT pins it (to reuse a broker by hand); otherwise a free pair per run
TEST_PORT = int(os.environ.get("POINTSMAN_TEST_KAFKA_PORT") or free_port_pair())


def pipeline_env(bootstrap: str, prefix: str, tmp_path: Path, tiny_model: Path,
                 **extra: str) -> dict[str, str]:
    """The environment of one test's role processes: its own topics, database and data dir."""
    return {
        **os.environ,
        "POINTSMAN_KAFKA_BOOTSTRAP": bootstrap,
        "POINTSMAN_TOPIC_PREFIX": prefix,
        "POINTSMAN_DATA_DIR": str(tmp_path / "data"),
        "POINTSMAN_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "POINTSMAN_SQL_LISTEN": "127.0.0.1:0",  # each sink's SQL endpoint on a free port
        "POINTSMAN_SLM_MODEL": str(tiny_model),
        "POINTSMAN_SLM_THREADS": "1",
        "POINTSMAN_SLM_ESCALATE_BELOW": "0",
        "POINTSMAN_SEMANTIC_CACHE": "off",  # exact counts per route; test_semantic_live turns it on
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@dataclass
class Pipeline:
    """Role processes for one test, each a real `pointsman run ROLE` process."""

    env: dict[str, str]
    topics: Topics
    dsn: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def for_test(cls, env: dict[str, str], topics: Topics, tmp_path: Path) -> Pipeline:
        logs = tmp_path / "logs"
        logs.mkdir()
        return cls(env, topics, env["POINTSMAN_CLICKHOUSE_DSN"], logs)

    def start(self, *roles: str) -> None:
        for role in roles:
            log = (self.logs / f"{role}.log").open("ab")
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", role],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def kill(self, role: str) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        proc = self.procs.pop(role)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, role: str, timeout: float = 30) -> int:
        proc = self.procs.pop(role)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args], env=self.env, cwd=ROOT,
            capture_output=True, text=True, timeout=timeout,
        )

    def reader(self) -> Reader:
        return wait_for_endpoint(self.dsn, timeout_s=60)

    def count(self, sql: str) -> int:
        return int(self.reader().query(sql)[1][0][0])

    def wait_until(self, sql: str, expected: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            try:
                seen = self.count(sql)
            except Exception:
                seen = -1
            if seen >= expected:
                return seen
            self._check_alive()
            time.sleep(0.5)
        return seen

    def _check_alive(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{role}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"role {role} died ({proc.returncode}):\n{tail}")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
