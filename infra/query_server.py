"""Read-only SQL: through the ClickHouse-compatible HTTP endpoint of the one process that holds the
embedded ClickHouse (infra/sql_http_server.py), or directly when none does.

The holder writes `<chdb dir>.endpoint.json` (host, port, pid, user, password; mode 0600).
`open_reader` finds a live endpoint there and reads through it with a stock clickhouse-connect
HTTP client (`RemoteReader`), as any other ClickHouse client would; with none, it opens the
database itself. Either way a query runs behind the `SqlGuard` (infra/sql_guard.py) in a session
with ClickHouse's readonly=1, which no query can lift. A server DSN never uses the endpoint.

The endpoint's password is POINTSMAN_SQL_PASSWORD, or one generated once into
`<data dir>/sql_password` (0600); `endpoint_status` says where it listens and with what.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from infra.clickhouse import connect, embedded_dir, is_embedded
from infra.sql_guard import QueryRefused, SqlGuard
from topics.errors import InfraError, PermanentError
from topics.redact import register_secret

log = logging.getLogger(__name__)

SQL_USER = "pointsman"
PASSWORD_FILE_NAME = "sql_password"
DEFAULT_LISTEN = "127.0.0.1:8123"


class Reader(Protocol):
    def query(self, sql: str) -> tuple[list[str], list[Any]]: ...


@dataclass(frozen=True)
class SqlEndpointSettings:
    """The sink's SQL endpoint. Env: POINTSMAN_SQL_LISTEN, POINTSMAN_SQL_PASSWORD."""

    listen: str = DEFAULT_LISTEN  # host:port; port 0 takes a free one
    password: str = field(default="", repr=False)  # empty: generated into password_file
    password_file: Path = Path(PASSWORD_FILE_NAME)  # <data dir>/sql_password
    user: str = SQL_USER

    def address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise InfraError(f"POINTSMAN_SQL_LISTEN must be host:port, got {self.listen!r}")
        return host.strip("[]") or "0.0.0.0", int(port)


def sql_password(settings: SqlEndpointSettings) -> str:
    """The configured password, or the generated one (created once, 0600, on first use)."""
    if settings.password:
        register_secret(settings.password)
        return settings.password
    file = settings.password_file
    for _ in range(2):
        try:
            password = file.read_text().strip()
        except FileNotFoundError:
            password = ""
        if password:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)  # nobody else may read it, whatever the umask made of it
            register_secret(password)
            return password
        file.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two processes starting at once agree on one password
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another process wrote it first (or left it empty): read it again
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    raise InfraError(f"{file} is empty: delete it, and a new SQL password is generated")


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


# ---- the endpoint's side of the file ------------------------------------------------------


def write_endpoint_file(file: Path, host: str, port: int, user: str, password: str) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": host, "port": port, "pid": os.getpid(), "user": user,
                   "password": password}, f)


# ---- reading through the endpoint ---------------------------------------------------------

_SERVER_TEXT = re.compile(r"server response: (.*?)(?: \(for url [^)]*\))?\s*$", re.DOTALL)
_VERSION = re.compile(r"\s*\(version [^)]*\)\s*$")
_REFUSED = re.compile(r"DB::Exception: (refused: .*?)\.? \((?:READONLY|ACCESS_DENIED)\)", re.DOTALL)


class RemoteReader:
    """Reads through a live endpoint with a stock clickhouse-connect HTTP client."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self._client: Client | None = None

    def query(self, sql: str) -> tuple[list[str], list[Any]]:
        try:
            if self._client is None:
                self._client = clickhouse_connect.get_client(
                    host=self.host, port=self.port, username=self.user, password=self._password,
                    connect_timeout=10, send_receive_timeout=300)
            result = self._client.query(sql)
        except OperationalError as exc:
            raise InfraError(f"query endpoint not reachable: {exc}") from None
        except DatabaseError as exc:
            raise _translate(exc) from None
        except ClickHouseError as exc:  # the client's own checks: a malformed result, say
            raise PermanentError(str(exc)) from None
        return list(result.column_names), result.result_rows

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _translate(exc: DatabaseError) -> Exception:
    """The endpoint's `Code: N. DB::Exception: ...` as the error a direct read raises."""
    text = str(exc)
    found = _SERVER_TEXT.search(text)
    server = _VERSION.sub("", found.group(1) if found else text).strip()
    refused = _REFUSED.search(server)
    if refused:
        return QueryRefused(refused.group(1), int(getattr(exc, "code", 0) or 164))
    if "(AUTHENTICATION_FAILED)" in server or "(REQUIRED_PASSWORD)" in server:
        return InfraError(f"the SQL endpoint refused this process's credentials: {server}")
    return PermanentError(server)


def open_reader(dsn: str) -> Reader:
    if is_embedded(dsn):
        live = _live_endpoint(endpoint_file(dsn))
        if live is not None:
            return live
    return ReadOnlyReader(dsn)


def _endpoint_info(file: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(file.read_text())
        os.kill(int(info["pid"]), 0)
        int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no file, an old one, or its process is gone
    return info if isinstance(info, dict) else None


def _live_endpoint(file: Path) -> RemoteReader | None:
    info = _endpoint_info(file)
    if info is None or "password" not in info:
        return None
    register_secret(str(info["password"]))
    return RemoteReader(str(info.get("host", "127.0.0.1")), int(info["port"]),
                        str(info.get("user", SQL_USER)), str(info["password"]))


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


def endpoint_status(settings: SqlEndpointSettings, dsn: str) -> list[str]:
    """Lines for `pointsman status`: where a ClickHouse client connects, and with what."""
    if not is_embedded(dsn):
        return ["SQL: the ClickHouse server of POINTSMAN_CLICKHOUSE_DSN (no embedded endpoint)"]
    info = _endpoint_info(endpoint_file(dsn))
    if info is None:
        where = f"not running (the sink serves it on {settings.listen})"
    else:
        where = f"http://{info.get('host', '127.0.0.1')}:{info['port']} (sink pid {info['pid']})"
    password = sql_password(settings)
    origin = ("set by POINTSMAN_SQL_PASSWORD" if settings.password
              else f"generated, kept in {settings.password_file}")
    shown = "(hidden)" if settings.password else password
    return [f"SQL endpoint (ClickHouse HTTP, read-only): {where}",
            f"  user {settings.user}, password {shown} ({origin})"]
