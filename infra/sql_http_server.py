"""The sink's SQL endpoint: ClickHouse's HTTP interface, read-only, over the embedded engine it
holds, so clickhouse-connect, curl and Grafana's ClickHouse data source work unchanged.

Each request: credentials (user `pointsman` and the endpoint's password), then the settings it
carries (`setting_refusal`), then the statement (`SqlGuard`), then it runs on a chdb handle of its
own: the allowed settings are SET, then readonly=1, then the query, in the output format the
client names (its FORMAT clause, else `default_format`, else TabSeparated: the engine writes every
ClickHouse format itself). The handle is closed after, so nothing a request set outlives it.
Engine calls take the writer's lock, so reads and the sink's inserts take turns as before.
"""

from __future__ import annotations

import errno
import hmac
import http.server
import json
import logging
import os
import re
import secrets
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
from clickhouse_connect.driver.binding import format_str

from infra.clickhouse import Database
from infra.clickhouse_http import (
    MAX_BODY_BYTES,
    Credentials,
    HttpQueryError,
    QueryRequest,
    compress,
    content_type,
    credentials,
    decompress,
    multipart_fields,
    query_request,
    response_encoding,
)
from infra.native_revision import UnsupportedType, for_revision
from infra.query_server import (
    ReadOnlyReader,
    SqlEndpointSettings,
    endpoint_file,
    sql_password,
    write_endpoint_file,
)
from infra.sql_guard import QueryRefused, setting_refusal
from topics.errors import PermanentError

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "TabSeparated"
_QUERY_ID = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")


@dataclass(frozen=True)
class Answer:
    body: bytes
    format: str
    summary: dict[str, str]


class ReadOnlyEngine:
    """Runs one checked statement on a fresh chdb handle: settings, then readonly=1, then it."""

    def __init__(self, path: str, lock: threading.Lock) -> None:
        self._path = os.path.realpath(path)  # chdb compares engine paths literally
        self._lock = lock

    def run(self, sql: str, fmt: str, settings: dict[str, str], parameters: dict[str, str],
            database: str | None) -> Answer:
        with self._lock:
            handle = chdb.connect(self._path)
            try:
                if database:
                    handle.query(f"USE `{database.replace('`', '``')}`", "TSV")
                for name, value in settings.items():
                    if name.lower() != "readonly":  # the session is set to 1 below, whatever asked
                        handle.query(f"SET {name} = {format_str(value)}", "TSV")
                handle.query("SET readonly = 1", "TSV")
                result = handle.query(sql, fmt, params=parameters)
            except Exception as exc:  # chdb raises its own errors with ClickHouse's text
                raise _engine_error(str(exc)) from None
            finally:
                handle.close()
        return Answer(result.bytes() or b"", fmt, _summary(result))


def _engine_error(text: str) -> HttpQueryError:
    error = HttpQueryError.from_engine(text)
    if error.code == 164 and not error.message.startswith("refused: "):
        error.message = f"refused: {error.message}"  # readonly=1 stopped what the guard let by
    return error


def _summary(result: Any) -> dict[str, str]:
    try:
        return {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                "written_rows": "0", "written_bytes": "0",
                "elapsed_ns": str(int(result.elapsed() * 1e9))}
    except Exception:  # statistics are a courtesy; an older chdb may lack them
        return {}


class QueryServer:
    """Serves the holder's database over ClickHouse's HTTP interface, read-only."""

    def __init__(self, database: Database, dsn: str,
                 settings: SqlEndpointSettings | None = None) -> None:
        # no settings (tests, a library caller): a free port and a password of its own
        self.settings = settings or SqlEndpointSettings(listen="127.0.0.1:0",
                                                        password=secrets.token_urlsafe(18))
        self.password = sql_password(self.settings)
        self.reader = ReadOnlyReader(dsn, lock=database.lock)  # the guard's parses run here
        self.engine = ReadOnlyEngine(str(database.client.path), database.lock)
        self.file = endpoint_file(dsn)
        catalogue = self.reader._run
        self.version, self.timezone = (str(v) for v in catalogue("SELECT version(), timezone()", {})[0])
        self.known_settings = frozenset(str(r[0]) for r in catalogue("SELECT name FROM system.settings", {}))
        self.formats = {str(r[0]).lower(): str(r[0]) for r in
                        catalogue("SELECT name FROM system.formats WHERE is_output", {})}
        self._http = _bind(self.settings, _handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                        name="sql-endpoint")

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def host(self) -> str:
        host = str(self._http.server_address[0])
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    def start(self) -> QueryServer:
        self._thread.start()
        write_endpoint_file(self.file, self.host, self.port, self.settings.user, self.password)
        log.info("SQL endpoint (ClickHouse HTTP, read-only) at http://%s:%d, user %s",
                 self.host, self.port, self.settings.user)
        return self

    def stop(self) -> None:
        self.file.unlink(missing_ok=True)
        self._http.shutdown()
        self._http.server_close()
        self.reader.close()

    # ---- one request ------------------------------------------------------------------------

    def authenticate(self, given: Credentials) -> None:
        if given.source == "none":
            raise HttpQueryError(194, f"{given.user}: Authentication failed: password is required "
                                      f"(user {self.settings.user}, see `pointsman status`)")
        user_ok = hmac.compare_digest(given.user.encode(), self.settings.user.encode())
        password_ok = hmac.compare_digest(given.password.encode(), self.password.encode())
        if not (user_ok and password_ok):
            raise HttpQueryError(516, f"{given.user}: Authentication failed: password is "
                                      "incorrect, or there is no user with such name")

    def answer(self, request: QueryRequest) -> Answer:
        for name, value in request.settings.items():
            refusal = setting_refusal(name, value, self.known_settings)
            if refusal is not None:
                raise refusal
        try:
            named = self.reader.guard.check(request.sql)
        except QueryRefused:
            raise
        except PermanentError as exc:  # a syntax error, in the engine's words
            raise HttpQueryError.from_engine(str(exc)) from None
        default = request.transport.get("default_format") or DEFAULT_FORMAT
        fmt = self.formats.get(default.lower())
        if fmt is None:  # also keeps chdb's Python-only formats (DataFrame, ...) out
            raise HttpQueryError(73, f"Unknown output format {default}")
        answer = self.engine.run(request.sql, fmt, request.settings, request.parameters,
                                 request.transport.get("database"))
        if named:
            answer = Answer(answer.body, self.formats.get(named.lower(), named), answer.summary)
        revision = request.transport.get("client_protocol_version", "0")
        if answer.format == "Native" and revision.isdigit() and int(revision) > 0:
            try:  # clickhouse-go decodes at the revision it sent
                body = for_revision(answer.body, int(revision))
            except UnsupportedType as exc:
                raise HttpQueryError(48, f"a column of type {exc} cannot be sent as Native to "
                                         f"client_protocol_version {revision}: cast it with "
                                         "toString() or ask for another format") from None
            answer = Answer(body, answer.format, answer.summary)
        return answer


def _bind(settings: SqlEndpointSettings, handler: type[http.server.BaseHTTPRequestHandler]
          ) -> http.server.ThreadingHTTPServer:
    host, port = settings.address()

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        return Server((host, port), handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        # the sink's inserts matter more than a fixed port: take a free one and say so
        server = Server((host, 0), handler)
        log.warning("SQL endpoint: %s:%d is in use; listening on %s:%d instead (`pointsman "
                    "status` shows it)", host, port, host, server.server_address[1])
        return server


def _handler(server: QueryServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients pool their connections
        server_version = "ClickHouse"

        def do_GET(self) -> None:
            self._serve(read_only_get=True)

        def do_POST(self) -> None:
            self._serve(read_only_get=False)

        def _serve(self, *, read_only_get: bool) -> None:
            query_id = str(uuid.uuid4())
            try:
                url = urlsplit(self.path)
                params = parse_qsl(url.query, keep_blank_values=True)
                body = self._body()
                if url.path.rstrip("/") in ("/ping", "/replicas_status") or (
                        read_only_get and not any(k == "query" for k, _ in params)):
                    self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                    return
                server.authenticate(credentials(dict(self.headers.items()), dict(params)))
                kind = self.headers.get("Content-Type", "")
                form = multipart_fields(kind, body) if kind.startswith("multipart/form-data") else None
                body_sql = None if read_only_get or form is not None else body.decode(errors="replace")
                request = query_request(params, body_sql, form)
                asked = request.transport.get("query_id", "")
                query_id = asked if _QUERY_ID.fullmatch(asked) else query_id  # echoed in a header
                answer = server.answer(request)
            except QueryRefused as exc:
                self._error(HttpQueryError(exc.code, str(exc)), query_id)
            except HttpQueryError as exc:
                self._error(exc, query_id)
            except Exception as exc:  # the client gets a reason, not a dropped connection
                log.warning("SQL endpoint: %s: %s", type(exc).__name__, exc)
                self._error(HttpQueryError(1002, f"{type(exc).__name__}: {exc}"), query_id)
            else:
                encoding = response_encoding(
                    self.headers.get("Accept-Encoding", ""),
                    request.transport.get("enable_http_compression", "0") == "1")
                headers = {"Content-Type": content_type(answer.format),
                           "X-ClickHouse-Format": answer.format,
                           "X-ClickHouse-Query-Id": query_id,
                           "X-ClickHouse-Timezone": server.timezone,
                           "X-ClickHouse-Summary": json.dumps(answer.summary)}
                if encoding:
                    headers["Content-Encoding"] = encoding
                self._send(200, compress(answer.body, encoding), headers)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._chunked()
            else:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True  # the rest is not read: the connection is spent
                    raise HttpQueryError(229, f"request body of {length} bytes is too large")
                body = self.rfile.read(length)
            return decompress(body, self.headers.get("Content-Encoding", ""))

        def _chunked(self) -> bytes:
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise HttpQueryError(229, "request body is too large")
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)  # the CRLF after each chunk

        def _error(self, error: HttpQueryError, query_id: str) -> None:
            headers = {"Content-Type": "text/plain; charset=UTF-8",
                       "X-ClickHouse-Exception-Code": str(error.code),
                       "X-ClickHouse-Query-Id": query_id}
            if error.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="ClickHouse server"'
            self._send(error.status, error.body(server.version), headers)

        def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("X-ClickHouse-Server-Display-Name", "pointsman")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:  # queries (and URL passwords) are not logged
            pass

    return Handler
