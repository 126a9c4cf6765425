"""ClickHouse through clickhouse-connect: embedded chdb (`chdb:///dir`) or a server (`http://…`).

The embedded engine locks its directory to one process. The process that holds it (the sink)
also serves read-only SQL on 127.0.0.1 (see infra/query_server.py), and `open_reader` uses that
endpoint when it is up, so `pointsman sql` and `report` work while the pipeline runs.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from topics.errors import InfraError, PermanentError

DATABASE = "pointsman"


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_dir(dsn: str) -> Path:
    return Path(dsn.removeprefix("chdb://"))


def connect(dsn: str) -> Client:
    try:
        if is_embedded(dsn):
            embedded_dir(dsn).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=dsn)
    except ClickHouseError as exc:
        if "Cannot lock file" in str(exc):
            raise InfraError(
                f"the embedded ClickHouse at {embedded_dir(dsn)} is held by another process "
                "that is not serving queries; stop it or use its query endpoint"
            ) from None
        raise InfraError(f"cannot open ClickHouse at {_safe(dsn)}: {exc}") from None


def _safe(dsn: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", dsn)  # hide credentials in messages


def migrate(client: Client) -> list[str]:
    """Apply infra/clickhouse/NNN_*.sql files not applied yet, in order; return their names."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations "
        "(name String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY name"
    )
    done = {row[0] for row in client.query(f"SELECT name FROM {DATABASE}.schema_migrations").result_rows}
    applied = []
    files = sorted(
        (f for f in resources.files("infra").joinpath("clickhouse").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    for file in files:
        if file.name in done:
            continue
        for statement in _statements(file.read_text()):
            client.command(statement)
        client.insert(f"{DATABASE}.schema_migrations", [[file.name]], column_names=["name"])
        applied.append(file.name)
    return applied


def _statements(sql: str) -> list[str]:
    without_comments = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in without_comments.split(";") if s.strip()]


class Database:
    """A clickhouse-connect client shared by threads of one process (inserts and queries)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()

    def insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        with self._lock:
            self.client.insert(table, rows, column_names=columns)

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            try:
                result = self.client.query(sql)
            except ClickHouseError as exc:
                raise PermanentError(str(exc).strip()) from None
            return list(result.column_names), result.result_rows
