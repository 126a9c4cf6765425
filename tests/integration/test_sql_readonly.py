"""`pointsman sql` is read-only, through the holder's query endpoint and through the direct path
(no endpoint up): a real embedded ClickHouse, a real QueryServer, the real CLI, and a local HTTP
server that records any request a url()/remote() would make."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.clickhouse import Database, connect, migrate
from infra.query_server import ReadOnlyReader, RemoteReader, open_reader
from infra.sql_guard import QueryRefused
from infra.sql_http_server import QueryServer
from pipeline.report import collect
from tests.harness import ROOT

pytestmark = pytest.mark.integration

STORED = "[/oops] \x1b[31mred\x1b[0m [bold]x"  # markup and an escape sequence, as stored text


@dataclass
class Recorder:
    """An HTTP server on loopback that only records: any hit means a query reached the network."""

    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                recorder.hits.append("connection")  # even a non-HTTP (native protocol) connect
                super().setup()

            def _record(self) -> None:
                recorder.hits.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"1\n")

            do_GET = do_POST = do_PUT = do_HEAD = _record

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    running = Recorder()
    yield running
    running.close()


@pytest.fixture()
def dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'clickhouse'}"


@pytest.fixture()
def writer(dsn: str) -> Iterator[Database]:
    """The sink's side: migrated tables and one stored answer with markup and an escape."""
    database = Database(connect(dsn))
    migrate(database.client)
    now = datetime.now(UTC)  # the answer column has a TTL off submitted_at
    database.insert("pointsman.results", [["q1", "acme", "slm", STORED, now, now]],
                    ["query_id", "tenant", "route", "answer", "submitted_at", "completed_at"])
    yield database
    database.client.close()


@pytest.fixture(params=["endpoint", "direct"])
def reader(request: pytest.FixtureRequest, writer: Database, dsn: str) -> Iterator[Any]:
    """`open_reader` as `pointsman sql` calls it: the endpoint while a holder serves one, the
    database itself when none does."""
    server = QueryServer(writer, dsn).start() if request.param == "endpoint" else None
    opened = open_reader(dsn)
    assert isinstance(opened, RemoteReader if server else ReadOnlyReader)
    yield opened
    if server is not None:
        server.stop()
    else:
        opened.close()


def refusals(recorder: Recorder, tmp: Path) -> list[tuple[str, str]]:
    return [
        ("INSERT INTO pointsman.results (query_id, answer) VALUES ('q2', 'x')", "INSERT statements"),
        ("ALTER TABLE pointsman.results UPDATE answer = 'x' WHERE 1", "ALTER statements"),
        ("CREATE TABLE pointsman.x (a Int8) ENGINE = Memory", "CREATE statements"),
        ("DROP TABLE pointsman.results", "DROP statements"),
        ("SYSTEM STOP MERGES", "SYSTEM statements"),
        ("KILL QUERY WHERE 1", "KILL QUERY statements"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table function file is not allowed"),
        ("SELECT file('/etc/passwd')", "function file is not allowed"),
        (f"INSERT INTO FUNCTION file('{tmp}/written.csv', 'CSV', 'a UInt8') SELECT 1",
         "INSERT statements"),
        (f"SELECT 1 INTO OUTFILE '{tmp}/outfile.txt'", "INTO OUTFILE"),
        (f"SELECT * FROM url('{recorder.url}/get', 'LineAsString', 'a String')",
         "table function url is not allowed"),
        (f"INSERT INTO FUNCTION url('{recorder.url}/post', 'CSV', 'a UInt8') SELECT 1",
         "INSERT statements"),
        (f"SELECT * FROM remote('{recorder.host}', system.one)", "table function remote"),
        (f"DESCRIBE TABLE url('{recorder.url}/describe', 'LineAsString')",  # infers a schema by GET
         "table function url is not allowed"),
        ("SELECT count() FROM pointsman.results SETTINGS readonly = 0", "SETTINGS clauses"),
        ("SELECT 1; DROP TABLE pointsman.results", "one statement per request"),
    ]


def test_reads_run_and_every_write_and_outside_reach_is_refused(
        reader: Any, writer: Database, recorder: Recorder, tmp_path: Path) -> None:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in reader.query(sql)[1]]

    assert rows("SELECT answer FROM pointsman.results FINAL") == [(STORED,)]
    assert rows("SELECT * FROM numbers(2)") == [(0,), (1,)]
    assert rows("SELECT count() > 0 FROM system.parts WHERE database = 'pointsman'") == [(True,)]
    assert len(rows("DESCRIBE TABLE pointsman.results")) > 10
    assert ("results",) in rows("SHOW TABLES FROM pointsman")
    report = collect(reader)  # `pointsman report`'s own queries
    assert report["totals"]["queries"] == 1 and report["routes"][0]["route"] == "slm"

    tables_sql = "SELECT name FROM system.tables WHERE database = 'pointsman' ORDER BY name"
    tables = writer.query(tables_sql)[1]
    assert ("results",) in tables
    for sql, named in refusals(recorder, tmp_path):
        with pytest.raises(QueryRefused) as refused:
            reader.query(sql)
        assert str(refused.value).startswith("refused: ") and named in str(refused.value), sql
    assert recorder.hits == []  # neither url() GET nor POST nor remote() reached the network
    assert not (tmp_path / "written.csv").exists() and not (tmp_path / "outfile.txt").exists()
    assert writer.query(tables_sql)[1] == tables
    assert writer.query("SELECT query_id, answer FROM pointsman.results")[1] == [("q1", STORED)]


def test_the_endpoint_answers_403_for_a_refusal_and_400_for_bad_sql(
        writer: Database, dsn: str) -> None:
    server = QueryServer(writer, dsn).start()
    try:
        def post(sql: str) -> httpx.Response:
            return httpx.post(f"http://127.0.0.1:{server.port}/", content=sql.encode(),
                              auth=("pointsman", server.password), timeout=30)

        refused = post("DROP TABLE pointsman.results")
        assert refused.status_code == 403 and refused.headers["X-ClickHouse-Exception-Code"] == "164"
        assert refused.text.startswith("Code: 164. DB::Exception: refused: DROP")
        assert post("SELEC 1").status_code == 400
        assert post("SELECT count() FROM pointsman.results").text == "1\n"
    finally:
        server.stop()


def _cli(dsn: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POINTSMAN_CLICKHOUSE_DSN": dsn, "POINTSMAN_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_with_exit_2_with_the_sink_stopped(writer: Database, dsn: str, tmp_path: Path) -> None:
    writer.client.close()  # the sink is stopped: the CLI opens the database itself
    dropped = _cli(dsn, tmp_path, "sql", "DROP TABLE pointsman.results")
    assert dropped.returncode == 2, dropped.stderr
    assert "pointsman: refused: DROP statements are not allowed" in dropped.stderr
    reopened = Database(connect(dsn))
    try:
        assert reopened.query("SELECT count() FROM pointsman.results")[1] == [(1,)]
    finally:
        reopened.client.close()
    writer.client = connect(dsn)  # for the fixture's teardown


def test_cli_through_the_endpoint_refuses_with_exit_2(writer: Database, dsn: str, tmp_path: Path) -> None:
    server = QueryServer(writer, dsn).start()
    try:
        killed = _cli(dsn, tmp_path, "sql", "KILL QUERY WHERE 1")
    finally:
        server.stop()
    assert killed.returncode == 2 and "pointsman: refused: KILL QUERY" in killed.stderr


def test_cli_table_shows_stored_markup_and_escapes_inertly(
        writer: Database, dsn: str, tmp_path: Path) -> None:
    server = QueryServer(writer, dsn).start()
    try:
        shown = _cli(dsn, tmp_path, "sql", "SELECT answer, '[/oops]' AS `[/oops]` FROM pointsman.results")
        as_csv = _cli(dsn, tmp_path, "sql", "--format", "csv", "SELECT answer FROM pointsman.results")
    finally:
        server.stop()
    assert shown.returncode == 0, shown.stderr  # rich markup in data used to crash the table
    assert "[/oops] \\x1b[31mred\\x1b[0m [bold]x" in shown.stdout
    assert shown.stdout.count("[/oops]") == 3  # header, stored text, literal
    assert "\x1b" not in shown.stdout  # no escape byte reaches the terminal
    assert as_csv.returncode == 0 and as_csv.stdout == f"answer\n{STORED}\n"  # csv stays the data
