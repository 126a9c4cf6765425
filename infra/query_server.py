"""Read-only SQL: over loopback HTTP from the one process that holds the embedded ClickHouse, or
directly when none does.

The holder writes `<chdb dir>.endpoint.json` (port, pid, token; mode 0600). `open_reader` finds a
live endpoint and sends queries there; with none, it opens the database itself. Either way a
query runs through a `ReadOnlyReader`: its own session with ClickHouse's readonly=1 (which no
query can lift) behind the `SqlGuard` (infra/sql_guard.py). Refusals are HTTP 403 on the endpoint.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import clickhouse_connect
import httpx
import msgspec
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from infra.clickhouse import Database, connect, embedded_dir, is_embedded
from infra.sql_guard import QueryRefused, SqlGuard
from topics.errors import InfraError, PermanentError

_encoder = msgspec.json.Encoder(enc_hook=str)  # datetimes, decimals, UUIDs as text


class Reader(Protocol):
    def query(self, sql: str) -> tuple[list[str], list[Any]]: ...


def endpoint_file(dsn: str) -> Path:
    directory = embedded_dir(dsn)
    return directory.with_name(directory.name + ".endpoint.json")


class ReadOnlyReader:
    """A ClickHouse session of its own with readonly=1 (chdb: SET on this handle; a server: sent
    with every request), and every statement checked by the guard before it runs."""

    def __init__(self, dsn: str, lock: threading.Lock | None = None) -> None:
        self.client = _connect_readonly_capable(dsn)
        self._lock = lock or threading.Lock()  # one engine call at a time on this client
        try:
            self.client.set_client_setting("readonly", "1")
            readonly = self._run("SELECT getSetting('readonly')", {})[0][0]
        except PermanentError as exc:
            raise InfraError(f"cannot make the ClickHouse session read-only: {exc}") from None
        if int(readonly) != 1:
            raise InfraError(f"the ClickHouse session is not read-only (readonly={readonly})")
        self.guard = SqlGuard(self._run)

    def query(self, sql: str) -> tuple[list[str], list[Any]]:
        self.guard.check(sql)
        with self._lock:
            try:
                result = self.client.query(sql)
            except ClickHouseError as exc:
                message = str(exc).strip()
                if "(READONLY)" in message:  # the session's readonly=1 stopped what the guard let by
                    raise QueryRefused(f"refused: {message}") from None
                raise PermanentError(message) from None
            return list(result.column_names), result.result_rows

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def _run(self, sql: str, parameters: dict[str, str]) -> list[Any]:
        with self._lock:
            try:
                return self.client.query(sql, parameters=parameters or None).result_rows
            except ClickHouseError as exc:
                raise PermanentError(str(exc).strip()) from None


def _connect_readonly_capable(dsn: str) -> Client:
    if is_embedded(dsn):
        return connect(dsn)  # its own chdb handle: a SET there stays on this session
    try:  # no HTTP session: readonly=1 rides in each request's parameters beside the client's own
        return clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
    except ClickHouseError as exc:
        raise InfraError(f"cannot open ClickHouse: {str(exc).splitlines()[0]}") from None


class QueryServer:
    """Serves the holder's database read-only. Its reader is a second session on the same engine
    (so readonly=1 never touches the writer's session) and shares the writer's lock, so reads
    and inserts still take turns on the one engine as before."""

    def __init__(self, database: Database, dsn: str) -> None:
        self.reader = ReadOnlyReader(dsn, lock=database.lock)
        self.file = endpoint_file(dsn)
        self.token = secrets.token_hex(16)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.headers.get("X-Pointsman-Token") != server.token:
                    self._reply(403, {"error": "bad token"})
                    return
                sql = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode(errors="replace")
                try:
                    columns, rows = server.reader.query(sql)
                    self._reply(200, {"columns": columns, "rows": rows})
                except QueryRefused as exc:
                    self._reply(403, {"error": str(exc), "refused": True})
                except PermanentError as exc:
                    self._reply(400, {"error": str(exc)})
                except Exception as exc:  # the caller gets a reason, not a dropped connection
                    self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = _encoder.encode(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: Any) -> None:  # queries are not logged
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def start(self) -> QueryServer:
        self._thread.start()
        port = self._http.server_address[1]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"port": port, "pid": os.getpid(), "token": self.token}, f)
        return self

    def stop(self) -> None:
        self.file.unlink(missing_ok=True)
        self._http.shutdown()
        self._http.server_close()
        self.reader.close()


@dataclass(frozen=True)
class RemoteReader:
    port: int
    token: str

    def query(self, sql: str) -> tuple[list[str], list[Any]]:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{self.port}/", content=sql.encode(),
                headers={"X-Pointsman-Token": self.token}, timeout=120,
            )
        except httpx.TransportError as exc:
            raise InfraError(f"query endpoint not reachable: {exc}") from None
        body = response.json()
        if response.status_code != 200:
            error = QueryRefused if body.get("refused") else PermanentError
            raise error(body.get("error", response.text))
        return body["columns"], body["rows"]


def open_reader(dsn: str) -> Reader:
    if is_embedded(dsn):
        live = _live_endpoint(endpoint_file(dsn))
        if live is not None:
            return live
    return ReadOnlyReader(dsn)


def _live_endpoint(file: Path) -> RemoteReader | None:
    try:
        info = json.loads(file.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None  # no file, or its process is gone
    return RemoteReader(int(info["port"]), str(info["token"]))


def wait_for_endpoint(dsn: str, timeout_s: float = 60.0) -> Reader:
    """The running pipeline's reader; never opens the embedded database itself (that would take
    the lock the sink needs)."""
    if not is_embedded(dsn):
        return ReadOnlyReader(dsn)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = _live_endpoint(endpoint_file(dsn))
        if live is not None:
            return live
        time.sleep(0.2)
    raise InfraError(
        f"no query endpoint for {embedded_dir(dsn)} after {timeout_s:.0f}s: is the sink running?"
    )
