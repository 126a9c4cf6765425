"""The sink's SQL endpoint speaks ClickHouse's HTTP interface: a real embedded ClickHouse, a real
QueryServer, and stock clients: clickhouse-connect's `get_client`, curl-style GETs and POSTs, and
requests shaped as Grafana's ClickHouse data source sends them in HTTP mode (clickhouse-go:
basic auth, default_format=Native, max_execution_time and limit settings, gzip both ways,
a chunked body). A local recorder HTTP server shows that no url()/remote() reaches the network."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import chdb
import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from infra.clickhouse import Database, connect, migrate
from infra.native_revision import BLOCK_INFO, UnsupportedType, for_revision, parse_type
from infra.query_server import RemoteReader, SqlEndpointSettings, endpoint_file, open_reader
from infra.sql_guard import QueryRefused
from infra.sql_http_server import QueryServer
from tests.harness import ROOT
from tests.integration.test_sql_readonly import Recorder

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QueryServer, Database, str]]:
    """The sink's side: migrated tables, one stored answer with its prompt, the endpoint up."""
    home = tmp_path_factory.mktemp("sqlhttp")
    dsn = f"chdb://{home / 'clickhouse'}"
    database = Database(connect(dsn))
    migrate(database.client)
    now = datetime.now(UTC)
    database.insert("pointsman.results", [["q1", "acme", "slm", "Paris", PROMPT, now, now]],
                    ["query_id", "tenant", "route", "answer", "prompt", "submitted_at", "completed_at"])
    settings = SqlEndpointSettings(listen="127.0.0.1:0", password=PASSWORD)
    server = QueryServer(database, dsn, settings).start()
    yield server, database, dsn
    server.stop()
    database.client.close()


@pytest.fixture(scope="module")
def client(served: tuple[QueryServer, Database, str]) -> Iterator[Client]:
    stock = clickhouse_connect.get_client(host="127.0.0.1", port=served[0].port,
                                          username="pointsman", password=PASSWORD)
    yield stock
    stock.close()


def url(server: QueryServer) -> str:
    return f"http://127.0.0.1:{server.port}/"


def results_count(database: Database) -> int:
    return int(database.query("SELECT count() FROM pointsman.results")[1][0][0])


def test_a_stock_clickhouse_connect_client_reads_the_results(client: Client) -> None:
    rows = client.query("SELECT query_id, tenant, route, answer, prompt FROM pointsman.results FINAL")
    assert rows.column_names == ("query_id", "tenant", "route", "answer", "prompt")
    assert rows.result_rows == [("q1", "acme", "slm", "Paris", PROMPT)]
    assert client.query("SELECT {n:UInt8} + 1", parameters={"n": 41}).result_rows == [(42,)]
    assert client.command("SELECT count() FROM pointsman.results") == 1
    frame = client.query_df("SELECT route, count() AS n FROM pointsman.results GROUP BY route")
    assert frame.to_dict("records") == [{"route": "slm", "n": 1}]


def test_a_client_with_a_database_and_form_encoded_parameters(
        served: tuple[QueryServer, Database, str]) -> None:
    stock = clickhouse_connect.get_client(host="127.0.0.1", port=served[0].port, username="pointsman",
                                          password=PASSWORD, database="pointsman",
                                          form_encode_query_params=True)  # multipart bodies
    try:
        assert stock.query("SELECT count() FROM results WHERE tenant = {t:String}",
                           parameters={"t": "acme"}).result_rows == [(1,)]
    finally:
        stock.close()


def test_a_wrong_or_missing_password_is_refused(served: tuple[QueryServer, Database, str]) -> None:
    server = served[0]
    with pytest.raises(DatabaseError) as refused:
        clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="pointsman",
                                      password="wrong")
    assert "516" in str(refused.value) and "Authentication failed" in str(refused.value)
    wrong = httpx.post(url(server), content=b"SELECT 1", auth=("pointsman", "wrong"))
    assert wrong.status_code == 403 and wrong.headers["X-ClickHouse-Exception-Code"] == "516"
    assert wrong.text.startswith("Code: 516. DB::Exception: pointsman: Authentication failed")
    other_user = httpx.post(url(server), content=b"SELECT 1", auth=("default", PASSWORD))
    assert other_user.status_code == 403
    missing = httpx.get(url(server), params={"query": "SELECT 1"})
    assert missing.status_code == 401 and missing.headers["X-ClickHouse-Exception-Code"] == "194"
    by_headers = httpx.post(url(server), content=b"SELECT 7",
                            headers={"X-ClickHouse-User": "pointsman", "X-ClickHouse-Key": PASSWORD})
    assert by_headers.status_code == 200 and by_headers.text == "7\n"


def test_writes_are_refused_and_nothing_changes(
        client: Client, served: tuple[QueryServer, Database, str]) -> None:
    database = served[1]
    for statement in ("INSERT INTO pointsman.results (query_id, answer) VALUES ('q2', 'x')",
                      "ALTER TABLE pointsman.results DELETE WHERE 1",
                      "CREATE TABLE pointsman.x (a UInt8) ENGINE = Memory",
                      "DROP TABLE pointsman.results", "SET readonly = 0",
                      "SELECT 1 SETTINGS readonly = 0"):
        with pytest.raises(DatabaseError) as refused:
            client.command(statement)
        assert "Code: 164" in str(refused.value) and "refused: " in str(refused.value), statement
    with pytest.raises(DatabaseError, match="Code: 164"):  # the client's own binary insert path
        client.insert("pointsman.results", [["q3", "acme"]], column_names=["query_id", "tenant"])
    lifted = httpx.post(url(served[0]), params={"readonly": "0"}, auth=("pointsman", PASSWORD),
                        content=b"INSERT INTO pointsman.results (query_id) VALUES ('q4')")
    assert lifted.status_code == 403 and "Cannot modify 'readonly'" in lifted.text
    assert results_count(database) == 1


def test_file_and_network_table_functions_are_refused(
        client: Client, served: tuple[QueryServer, Database, str], tmp_path: Path) -> None:
    recorder = Recorder()
    try:
        for statement in (f"SELECT * FROM url('{recorder.url}/x', 'LineAsString', 'a String')",
                          f"SELECT * FROM remote('{recorder.host}', system.one)",
                          "SELECT * FROM file('/etc/passwd', 'LineAsString')",
                          "SELECT file('/etc/passwd')",
                          f"SELECT * FROM s3('{recorder.url}/b/k', 'LineAsString', 'a String')"):
            with pytest.raises(DatabaseError) as refused:
                client.query(statement)
            assert "Code: 497" in str(refused.value) and "is not allowed" in str(refused.value)
        with pytest.raises(DatabaseError, match="INTO OUTFILE"):
            client.command(f"SELECT 1 INTO OUTFILE '{tmp_path}/out.txt'")
        for setting, value in (("format_avro_schema_registry_url", recorder.url),
                               ("format_schema", "/etc/passwd:x")):
            response = httpx.post(url(served[0]), content=b"SELECT 1", params={setting: value},
                                  auth=("pointsman", PASSWORD))
            assert response.status_code == 403 and f"Cannot modify '{setting}'" in response.text
    finally:
        recorder.close()
    assert recorder.hits == [] and not (tmp_path / "out.txt").exists()


def test_curl_style_requests(served: tuple[QueryServer, Database, str]) -> None:
    server = served[0]
    credentials = {"user": "pointsman", "password": PASSWORD}
    got = httpx.get(url(server), params={"query": "SELECT 1 FORMAT TSV", **credentials})
    assert (got.status_code, got.text, got.headers["X-ClickHouse-Format"]) == (200, "1\n", "TSV")
    assert httpx.get(url(server)).text == "Ok.\n" and httpx.get(url(server) + "ping").text == "Ok.\n"
    posted = httpx.post(url(server), params={"default_format": "JSONEachRow", **credentials},
                        content=b"SELECT tenant, prompt FROM pointsman.results")
    assert posted.headers["Content-Type"].startswith("application/json")
    assert json.loads(posted.text) == {"tenant": "acme", "prompt": PROMPT}
    joined = httpx.post(url(server), params={"query": "SELECT route FROM pointsman.results", **credentials},
                        content=b"FORMAT CSVWithNames")  # the query parameter, then the body
    assert joined.text == '"route"\n"slm"\n'
    bad = httpx.post(url(server), params=credentials, content=b"SELEC 1")
    assert bad.status_code == 400 and bad.headers["X-ClickHouse-Exception-Code"] == "62"
    unknown = httpx.post(url(server), params=credentials, content=b"SELECT * FROM pointsman.nope")
    assert unknown.status_code == 404 and "(UNKNOWN_TABLE)" in unknown.text
    no_format = httpx.post(url(server), params={"default_format": "DataFrame", **credentials},
                           content=b"SELECT 1")
    assert no_format.status_code == 404 and no_format.headers["X-ClickHouse-Exception-Code"] == "73"


def test_grafana_style_requests(served: tuple[QueryServer, Database, str]) -> None:
    """clickhouse-go in HTTP mode: POST, basic auth in the URL, default_format=Native, the
    data source's settings as parameters, a gzipped chunked body, gzip asked for in return."""
    server = served[0]
    body = gzip.compress(b"SELECT number FROM numbers(10) FORMAT JSONCompact")
    response = httpx.post(
        f"http://pointsman:{PASSWORD}@127.0.0.1:{server.port}/",
        params={"default_format": "Native", "max_execution_time": "60", "limit": "3",
                "output_format_json_quote_64bit_integers": "0", "enable_http_compression": "1",
                "query_id": "grafana-1"},
        content=iter([body[:7], body[7:]]),  # an iterator: httpx sends it chunked
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["X-ClickHouse-Query-Id"] == "grafana-1"
    injected = httpx.post(url(server), params={"query_id": "x\r\nSet-Cookie: a=b"},
                          content=b"SELECT 1", auth=("pointsman", PASSWORD))
    assert "set-cookie" not in injected.headers and injected.headers["X-ClickHouse-Query-Id"] != "x"
    data = json.loads(response.text)  # httpx undoes the gzip
    assert data["data"] == [[0], [1], [2]]  # limit=3 applied; UInt64 unquoted as asked
    native = httpx.post(f"http://pointsman:{PASSWORD}@127.0.0.1:{server.port}/",
                        params={"default_format": "Native"}, content=b"SELECT 1 AS x")
    assert native.headers["X-ClickHouse-Format"] == "Native"
    assert native.content == b"\x01\x01\x01x\x05UInt8\x01"  # one column, one row, x UInt8 = 1


def test_pointsman_sql_reads_through_the_endpoint(
        served: tuple[QueryServer, Database, str], tmp_path: Path) -> None:
    server, _, dsn = served
    info = json.loads(endpoint_file(dsn).read_text())
    assert (info["port"], info["user"], info["pid"]) == (server.port, "pointsman", os.getpid())
    assert endpoint_file(dsn).stat().st_mode & 0o777 == 0o600
    reader = open_reader(dsn)
    assert isinstance(reader, RemoteReader)
    assert reader.query("SELECT prompt FROM pointsman.results") == (["prompt"], [(PROMPT,)])
    with pytest.raises(QueryRefused, match=r"^refused: DROP statements are not allowed"):
        reader.query("DROP TABLE pointsman.results")
    env = {**os.environ, "POINTSMAN_CLICKHOUSE_DSN": dsn, "POINTSMAN_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "sql", "--format", "csv",
                            "SELECT tenant, prompt FROM pointsman.results"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout == f"tenant,prompt\nacme,{PROMPT}\n", shown.stderr


def test_a_taken_port_falls_back_to_a_free_one(
        served: tuple[QueryServer, Database, str], tmp_path: Path) -> None:
    _, database, dsn = served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        second = QueryServer(database, dsn, SqlEndpointSettings(listen=f"127.0.0.1:{busy}",
                                                                password=PASSWORD))
        second._thread.start()  # serving, without start()'s endpoint file: the fixture owns it
        try:
            assert second.port not in (busy, 0)
            reply = httpx.get(f"http://127.0.0.1:{second.port}/",
                              params={"query": "SELECT 2", "user": "pointsman", "password": PASSWORD})
            assert reply.text == "2\n"
        finally:
            second._http.shutdown()
            second._http.server_close()
            second.reader.close()


def test_status_prints_the_generated_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POINTSMAN_SQL_PASSWORD"}
    env.update({"POINTSMAN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
                "POINTSMAN_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    password_file = tmp_path / "data" / "sql_password"
    assert shown.returncode == 0, shown.stderr
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert f"user pointsman, password {password} (generated" in shown.stdout
    assert "not running" in shown.stdout


# one column of each layout the Native rewrite walks (2 rows each)
COLUMNS = [
    "number::UInt8 AS u8", "toInt64(number) - 5 AS i64", "toFloat32(number) / 3 AS f32",
    "toString(number * 1000) AS s", "toFixedString(toString(number), 3) AS fs",
    "toNullable(if(number = 0, NULL, number)) AS n", "range(number + 1) AS arr",
    "[[number], []] AS arr2", "map('k', toString(number)) AS m", "tuple(number, 'x') AS t",
    "CAST(tuple(number, 'y') AS Tuple(a UInt64, b String)) AS nt",
    "CAST(toString(number % 2) AS LowCardinality(String)) AS lc",
    "CAST(if(number = 0, NULL, 'v') AS LowCardinality(Nullable(String))) AS lcn",
    "[CAST('a' AS LowCardinality(String))] AS alc",
    "map(CAST('k' AS LowCardinality(String)), number) AS mlc",
    "toDecimal64(number, 4) AS d64", "toDecimal128(number, 2) AS d128",
    "CAST(1.5 AS Decimal(20, 3)) AS dp", "toDateTime64('2026-01-01 00:00:00', 3, 'UTC') AS dt64",
    "toDateTime('2026-01-01 00:00:00', 'UTC') AS dt", "toDate('2026-01-01') AS d",
    "toUUID('00000000-0000-0000-0000-000000000001') AS uuid", "toIPv4('1.2.3.4') AS ip4",
    "CAST('a' AS Enum8('a' = 1, 'b' = 2)) AS e8", "number % 2 = 0 AS b",
    "toIntervalSecond(number) AS iv", "(1.0, 2.0)::Point AS p",
]


def _header_end(native: bytes) -> int:
    """Where a one-column block's name and type end (the column's data follows)."""
    pos = 2  # one column, two rows: one varint byte each
    for _ in range(2):
        length = native[pos]  # names and types here are shorter than 128 bytes
        pos += 1 + length
    return pos


def test_native_for_a_client_revision_adds_block_info_and_serialization_flags(
        served: tuple[QueryServer, Database, str]) -> None:
    """What the engine writes (revision 0) against what a server writes for clickhouse-go's
    revision: BlockInfo first, and a zero flag after each column's type; data bytes unchanged.
    Each column's bytes come from querying it alone, so its boundaries are the engine's own."""
    handle = chdb.connect(os.path.realpath(str(served[1].client.path)))
    try:
        def native(select: str) -> bytes:
            return handle.query(f"SELECT {select} FROM numbers(2)", "Native").bytes()

        whole = native(", ".join(COLUMNS))
        parts = [native(column) for column in COLUMNS]
        header = bytes([len(COLUMNS), 2])
        assert for_revision(whole, 0) == whole
        assert for_revision(whole, 54405) == BLOCK_INFO + whole  # flags start at 54454
        flagged = b"".join(p[2:_header_end(p)] + b"\x00" + p[_header_end(p):] for p in parts)
        assert for_revision(whole, 54515) == BLOCK_INFO + header + flagged
        empty = handle.query(f"SELECT {', '.join(COLUMNS)} FROM numbers(2) LIMIT 0", "Native").bytes()
        assert for_revision(empty, 54515) == empty == b""  # the engine writes no block for no rows
        two_blocks = handle.query("SELECT number FROM numbers(100000)", "Native").bytes()
        assert for_revision(two_blocks, 54515).count(BLOCK_INFO) >= 2
    finally:
        handle.close()
    for unknown in ("Dynamic", "JSON", "Variant(String, UInt8)", "AggregateFunction(sum, UInt8)"):
        with pytest.raises(UnsupportedType):
            parse_type(unknown)


def test_a_client_protocol_version_gets_native_it_can_read(
        served: tuple[QueryServer, Database, str]) -> None:
    """clickhouse-go sends client_protocol_version and decodes at it; clickhouse-connect's probe
    finds it supported and uses it too (its LowCardinality-aware revision)."""
    server = served[0]
    probe = httpx.post(url(server), params={"client_protocol_version": "54405", "default_format": "Native"},
                       content=b"SELECT 1 AS check", auth=("pointsman", PASSWORD))
    assert probe.content[8:16] == b"\x01\x01\x05check"  # what clickhouse-connect checks
    stock = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="pointsman",
                                          password=PASSWORD)
    try:
        assert stock.protocol_version == 54405
        assert stock.query("SELECT tenant, [CAST('a' AS LowCardinality(String))] FROM "
                           "pointsman.results").result_rows == [("acme", ["a"])]
    finally:
        stock.close()
    dynamic = httpx.post(url(server), params={"client_protocol_version": "54515", "default_format": "Native"},
                         content=b"SELECT 1::Dynamic AS d", auth=("pointsman", PASSWORD))
    assert dynamic.status_code == 501 and "toString()" in dynamic.text
