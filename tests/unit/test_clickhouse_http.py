"""The HTTP endpoint's reading of a request (credentials, parameters, bodies) and its errors in
ClickHouse's shape; and the settings policy a query's URL parameters pass. Pure: no engine."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest

from infra.clickhouse_http import (
    CODECS,
    HttpQueryError,
    compress,
    content_type,
    credentials,
    decompress,
    multipart_fields,
    query_request,
    response_encoding,
)
from infra.native_revision import BLOCK_INFO, Type, for_revision, parse_type
from infra.query_server import SqlEndpointSettings, sql_password
from infra.sql_guard import setting_refusal


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_each_place_a_client_puts_them() -> None:
    assert credentials({"X-ClickHouse-User": "pointsman", "X-ClickHouse-Key": "k"}, {}) == \
        credentials({"x-clickhouse-user": "pointsman", "x-clickhouse-key": "k"}, {})
    by_header = credentials({"X-ClickHouse-User": "pointsman", "X-ClickHouse-Key": "k"}, {})
    assert (by_header.user, by_header.password, by_header.source) == ("pointsman", "k", "headers")
    by_basic = credentials({"Authorization": basic("pointsman", "p:w")}, {})
    assert (by_basic.user, by_basic.password, by_basic.source) == ("pointsman", "p:w", "basic")
    by_params = credentials({}, {"user": "pointsman", "password": "pw"})
    assert (by_params.user, by_params.password, by_params.source) == ("pointsman", "pw", "params")
    anonymous = credentials({}, {})
    assert (anonymous.user, anonymous.password, anonymous.source) == ("default", "", "none")


def test_credential_precedence_is_clickhouses() -> None:
    both = credentials({"X-ClickHouse-User": "a", "X-ClickHouse-Key": "1",
                        "Authorization": basic("b", "2")}, {"user": "c", "password": "3"})
    assert both.user == "a"
    assert credentials({"Authorization": basic("b", "2")}, {"user": "c"}).user == "b"


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!not-base64", "Digest x"])
def test_other_authorization_schemes_fail_authentication(header: str) -> None:
    with pytest.raises(HttpQueryError) as failed:
        credentials({"Authorization": header}, {})
    assert failed.value.code == 516 and failed.value.status == 403


def test_parameters_sort_into_query_transport_settings_and_bindings() -> None:
    request = query_request(
        [("query", "SELECT {n:UInt8}"), ("database", "pointsman"), ("default_format", "JSON"),
         ("query_id", "q1"), ("session_id", "s"), ("param_n", "4"), ("max_execution_time", "60"),
         ("limit", "10"), ("user", "pointsman"), ("password", "pw"), ("limit", "20")],
        "FORMAT TSV")
    assert request.sql == "SELECT {n:UInt8}\nFORMAT TSV"  # query parameter, newline, body
    assert request.parameters == {"n": "4"}
    assert request.settings == {"max_execution_time": "60", "limit": "20"}  # the last one wins
    assert request.transport["database"] == "pointsman" and "password" in request.transport
    assert "password" not in request.settings and "user" not in request.settings
    assert query_request([], "SELECT 1").sql == "SELECT 1"
    assert query_request([], None, {"query": "SELECT 2", "param_x": "y"}).parameters == {"x": "y"}


def test_an_empty_query_and_block_compression_are_errors() -> None:
    with pytest.raises(HttpQueryError) as empty:
        query_request([("database", "x")], "  ")
    assert empty.value.code == 62 and empty.value.status == 400
    with pytest.raises(HttpQueryError) as block:
        query_request([("compress", "1")], "SELECT 1")
    assert block.value.code == 48 and "enable_http_compression" in block.value.message
    assert query_request([("compress", "0")], "SELECT 1").sql == "SELECT 1"


def test_multipart_form_fields_and_no_external_tables() -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
            f"SELECT {{s:String}}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"param_s\"\r\n\r\nlong value\r\n--{boundary}--\r\n").encode()
    fields = multipart_fields(f"multipart/form-data; boundary={boundary}", body)
    assert fields == {"query": "SELECT {s:String}", "param_s": "long value"}
    with_file = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"t\"; filename=\"t.tsv\""
                 f"\r\n\r\n1\r\n--{boundary}--\r\n").encode()
    with pytest.raises(HttpQueryError, match="external data"):
        multipart_fields(f"multipart/form-data; boundary={boundary}", with_file)


def test_engine_errors_keep_their_code_and_name_and_map_to_http_statuses() -> None:
    error = HttpQueryError.from_engine(
        "Code: 60. DB::Exception: Unknown table expression identifier 'x'. (UNKNOWN_TABLE)")
    assert (error.code, error.status) == (60, 404)
    assert error.message == "Unknown table expression identifier 'x'"
    assert error.body("26.9") == (b"Code: 60. DB::Exception: Unknown table expression identifier "
                                  b"'x'. (UNKNOWN_TABLE) (version 26.9)\n")
    assert HttpQueryError(516, "pointsman: Authentication failed").body("1") == (
        b"Code: 516. DB::Exception: pointsman: Authentication failed. (AUTHENTICATION_FAILED) "
        b"(version 1)\n")
    statuses = {code: HttpQueryError(code, "m").status for code in (62, 164, 194, 497, 516, 229, 9999)}
    assert statuses == {62: 400, 164: 403, 194: 401, 497: 403, 516: 403, 229: 413, 9999: 500}
    assert HttpQueryError.from_engine("no code here").code == 1002


def test_compression_only_when_asked_with_enable_http_compression() -> None:
    assert response_encoding("gzip, deflate", enabled=False) is None
    assert response_encoding("br, gzip;q=0.5", enabled=True) == "gzip"  # first one we have
    assert response_encoding("br", enabled=True) is None
    for name in CODECS:
        assert decompress(compress(b"x" * 1000, name), name) == b"x" * 1000
    assert {"gzip", "deflate", "lz4"} <= set(CODECS)
    assert decompress(gzip.compress(b"SELECT 1"), "GZIP") == b"SELECT 1"
    with pytest.raises(HttpQueryError) as unknown:
        decompress(b"x", "snappy")
    assert unknown.value.code == 89
    with pytest.raises(HttpQueryError) as corrupt:
        decompress(b"not gzip", "gzip")
    assert corrupt.value.code == 271


def test_content_types_follow_the_format() -> None:
    assert content_type("JSONCompact").startswith("application/json")
    assert content_type("TabSeparatedWithNames").startswith("text/tab-separated-values")
    assert content_type("TSV").startswith("text/tab-separated-values")
    assert content_type("CSVWithNames").startswith("text/csv")
    assert content_type("Native") == content_type("RowBinaryWithNamesAndTypes") == "application/octet-stream"


@pytest.mark.parametrize("name, value", [
    ("max_execution_time", "60"), ("limit", "100"), ("output_format_json_quote_64bit_integers", "0"),
    ("date_time_output_format", "iso"), ("readonly", "1"), ("readonly", "2"),
    ("format_csv_delimiter", ";"), ("session_timezone", "UTC"),
])
def test_settings_a_reader_sends_are_allowed(name: str, value: str) -> None:
    assert setting_refusal(name, value) is None


@pytest.mark.parametrize("name, value", [
    ("readonly", "0"), ("format_schema", "/etc/passwd:x"), ("output_format_schema", "/tmp/s.capnp"),
    ("format_avro_schema_registry_url", "http://127.0.0.1:9/"), ("format_template_row", "/etc/x"),
    ("allow_ddl", "1"), ("max_bytes_before_external_group_by", "1"),
    ("format_display_secrets_in_show_and_select", "1"),
])
def test_settings_that_write_reach_out_or_lift_readonly_are_refused(name: str, value: str) -> None:
    refusal = setting_refusal(name, value)
    assert refusal is not None and refusal.code == 164
    assert str(refusal).startswith(f"refused: Cannot modify '{name}' setting in readonly mode")


def test_an_unknown_setting_is_reported_as_unknown() -> None:
    refusal = setting_refusal("no_such_setting", "1", frozenset({"limit"}))
    assert refusal is not None and refusal.code == 115 and "Unknown setting" in str(refusal)
    assert setting_refusal("limit", "1", frozenset({"limit"})) is None


def test_the_password_is_configured_or_generated_once_private(tmp_path: Path) -> None:
    assert sql_password(SqlEndpointSettings(password="given-pw", password_file=tmp_path / "f")) == "given-pw"
    assert not (tmp_path / "f").exists()  # a configured password is never written down
    settings = SqlEndpointSettings(password_file=tmp_path / "data" / "sql_password")
    first = sql_password(settings)
    assert len(first) >= 20 and sql_password(settings) == first
    assert settings.password_file.stat().st_mode & 0o777 == 0o600
    settings.password_file.chmod(0o644)
    assert sql_password(settings) == first and settings.password_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("listen, address", [
    ("127.0.0.1:8123", ("127.0.0.1", 8123)), (":0", ("0.0.0.0", 0)), ("[::1]:9000", ("::1", 9000)),
])
def test_listen_addresses(listen: str, address: tuple[str, int]) -> None:
    assert SqlEndpointSettings(listen=listen).address() == address


@pytest.mark.parametrize("listen", ["8123", "host:", "host:99999", "host:http"])
def test_bad_listen_addresses_say_which_setting(listen: str) -> None:
    with pytest.raises(Exception, match="POINTSMAN_SQL_LISTEN"):
        SqlEndpointSettings(listen=listen).address()


@pytest.mark.parametrize("text, expected", [
    ("DateTime64(3, 'UTC')", Type("DateTime64", size=8)),
    ("Decimal(20, 3)", Type("Decimal", size=16)),
    ("Enum8('a,b' = 1, 'c' = 2)", Type("Enum8", size=1)),
    ("FixedString(7)", Type("FixedString", size=7)),
    ("Map(LowCardinality(String), Array(Nullable(UInt8)))",
     Type("Map", (Type("LowCardinality", (Type("String"),)),
                  Type("Array", (Type("Nullable", (Type("UInt8", size=1),)),))))),
    ("Tuple(a String, `b c` UInt16)", Type("Tuple", (Type("String"), Type("UInt16", size=2)))),
    ("Point", Type("Tuple", (Type("Float64", size=8), Type("Float64", size=8)))),
    ("SimpleAggregateFunction(sum, UInt64)", Type("UInt64", size=8)),
])
def test_native_types_parse_to_their_layout(text: str, expected: Type) -> None:
    assert parse_type(text) == expected


def test_native_rewrite_walks_a_low_cardinality_column_of_several_granules() -> None:
    """One column, 3 rows, as two granules: keys in the first, indexes only in the second."""
    column = (b"\x01\x00\x00\x00\x00\x00\x00\x00"  # keys version
              + (0 | 1 << 9).to_bytes(8, "little") + (2).to_bytes(8, "little") + b"\x01a\x01b"
              + (2).to_bytes(8, "little") + b"\x00\x01"
              + (0).to_bytes(8, "little") + (1).to_bytes(8, "little") + b"\x01")
    block = b"\x01\x03" + b"\x01c" + b"\x16LowCardinality(String)" + column
    assert for_revision(block, 54515) == BLOCK_INFO + block[:27] + b"\x00" + column
    with pytest.raises(ValueError, match="truncated"):
        for_revision(block[:-1], 54515)
