"""ClickHouse's HTTP interface, the parts a read-only endpoint needs: pure functions over a
request's headers, URL parameters and body, and the errors in ClickHouse's own shape.

What a stock client sends (clickhouse-connect, curl, Grafana's clickhouse-go in HTTP mode):
- credentials as `X-ClickHouse-User`/`X-ClickHouse-Key` headers, HTTP basic auth, or
  `user`/`password` URL parameters;
- the query in the `query` URL parameter, the body, or both (ClickHouse joins them with a newline),
  or as a multipart form field with its `param_*` values beside it;
- `param_<name>` values for `{name:Type}` placeholders, bound by the engine;
- transport parameters (`database`, `default_format`, `query_id`, `session_id`, compression
  switches, ...) and any other parameter as a ClickHouse setting.

Errors go back as ClickHouse does: a status from the code, the body
`Code: N. DB::Exception: ... (NAME) (version V)`, and the `X-ClickHouse-Exception-Code` header,
which is what clients read to show the error.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import gzip
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# parameters the HTTP layer consumes itself: never passed to the engine as settings
TRANSPORT_PARAMS = frozenset({
    "query", "user", "password", "quota_key", "database", "default_format", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query", "buffer_size",
    "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "http_native_compression_disable_checksumming_on_decompress",
    "cancel_http_readonly_queries_on_client_close", "add_http_cors_header", "role",
})

# error codes: name and HTTP status (as ClickHouse's exceptionCodeToHTTPStatus maps them, except
# READONLY, which ClickHouse leaves at 500: a refused write is 403 here)
CODES: dict[int, tuple[str, int]] = {
    36: ("BAD_ARGUMENTS", 400),
    48: ("NOT_IMPLEMENTED", 501),
    62: ("SYNTAX_ERROR", 400),
    73: ("UNKNOWN_FORMAT", 404),
    81: ("UNKNOWN_DATABASE", 404),
    89: ("UNKNOWN_COMPRESSION_METHOD", 400),
    115: ("UNKNOWN_SETTING", 404),
    159: ("TIMEOUT_EXCEEDED", 408),
    164: ("READONLY", 403),
    194: ("REQUIRED_PASSWORD", 401),
    229: ("QUERY_IS_TOO_LARGE", 413),
    271: ("CANNOT_DECOMPRESS", 400),
    497: ("ACCESS_DENIED", 403),
    516: ("AUTHENTICATION_FAILED", 403),
    1002: ("UNKNOWN_EXCEPTION", 500),
}
_NOT_FOUND_CODES = frozenset({16, 46, 47, 60, 63, 73, 81, 115})  # unknown column/function/table ...
_BAD_REQUEST_CODES = frozenset({6, 27, 36, 38, 41, 43, 44, 53, 62, 69, 70, 72, 117, 167, 168, 386})
_CODE = re.compile(r"Code: (\d+)\. ")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\)\s*)?$")

MAX_BODY_BYTES = 16 << 20  # a query and its parameters; larger is QUERY_IS_TOO_LARGE


class HttpQueryError(Exception):
    """A ClickHouse-style error for the response: `message` is the text after DB::Exception."""

    def __init__(self, code: int, message: str, name: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._name = name  # the engine's own name for a code not listed in CODES

    @classmethod
    def from_engine(cls, text: str) -> HttpQueryError:
        """From the engine's own `Code: N. DB::Exception: ... (NAME)` text."""
        text = text.strip()
        found = _CODE.search(text)
        if not found:
            return cls(1002, text)
        message = text[found.end():].removeprefix("DB::Exception: ")
        named = _NAME.search(message)
        return cls(int(found.group(1)), _NAME.sub("", message).rstrip(" ."),
                   named.group(1) if named else "")

    @property
    def name(self) -> str:
        return CODES.get(self.code, (self._name, 0))[0]

    @property
    def status(self) -> int:
        if self.code in CODES:
            return CODES[self.code][1]
        if self.code in _NOT_FOUND_CODES:
            return 404
        if self.code in _BAD_REQUEST_CODES:
            return 400
        return 500

    def body(self, version: str) -> bytes:
        name = f" ({self.name})" if self.name else ""
        return f"Code: {self.code}. DB::Exception: {self.message}.{name} (version {version})\n".encode()


# ---- credentials --------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    source: str  # "headers", "basic", "params" or "none": for the error message only


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials:
    """The credentials a request carries, by ClickHouse's precedence: X-ClickHouse-User/Key
    headers, then `Authorization: Basic`, then `user`/`password` parameters; none: `default`
    with no password, as ClickHouse takes it. A header name is matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "x-clickhouse-user" in lower or "x-clickhouse-key" in lower:
        return Credentials(lower.get("x-clickhouse-user", "default"),
                           lower.get("x-clickhouse-key", ""), "headers")
    authorization = lower.get("authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise HttpQueryError(516, f"{scheme} authentication is not supported: use a user and password")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise HttpQueryError(516, "malformed Authorization header") from None
        user, _, password = decoded.partition(":")
        return Credentials(user, password, "basic")
    if "user" in params or "password" in params:
        return Credentials(params.get("user", "default"), params.get("password", ""), "params")
    return Credentials("default", "", "none")


# ---- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRequest:
    sql: str
    transport: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # to check against the settings policy
    parameters: dict[str, str] = field(default_factory=dict)  # {name:Type} values, name unprefixed


def query_request(params: Sequence[tuple[str, str]], body_sql: str | None,
                  form: Mapping[str, str] | None = None) -> QueryRequest:
    """Sort a request's URL parameters (and form fields) into the query text, transport
    parameters, settings and query parameters. The last value of a repeated name wins."""
    transport: dict[str, str] = {}
    settings: dict[str, str] = {}
    parameters: dict[str, str] = {}
    for name, value in [*params, *(form or {}).items()]:
        if name.startswith("param_"):
            parameters[name.removeprefix("param_")] = value
        elif name in TRANSPORT_PARAMS:
            transport[name] = value
        else:
            settings[name] = value
    parts = [part for part in (transport.get("query"), body_sql) if part]
    sql = "\n".join(parts)
    if not sql.strip():
        raise HttpQueryError(62, "Empty query")
    for switch in ("compress", "decompress"):  # ClickHouse's own block compression
        if transport.get(switch, "0") not in ("0", ""):
            raise HttpQueryError(48, f"{switch}=1 (ClickHouse block compression) is not supported "
                                     "here; use HTTP compression (enable_http_compression=1)")
    return QueryRequest(sql, transport, settings, parameters)


def multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (clickhouse-connect sends the query and long
    `param_*` values so). A file field would be an external table, which is not supported."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise HttpQueryError(36, "malformed multipart/form-data body")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise HttpQueryError(48, "external data tables are not supported by this endpoint")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    return fields


# ---- compression --------------------------------------------------------------------------


def _lz4() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    try:
        import lz4.frame
    except ImportError:
        return None
    return lz4.frame.compress, lz4.frame.decompress


def _zstd() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    try:
        from backports import zstd  # Python < 3.14; clickhouse-connect depends on it
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found, no-redef]
        except ImportError:
            return None
    return zstd.compress, zstd.decompress


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    found: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "gzip": (gzip.compress, gzip.decompress),
        "deflate": (zlib.compress, zlib.decompress),
    }
    for name, loader in (("lz4", _lz4), ("zstd", _zstd)):
        codec = loader()
        if codec is not None:
            found[name] = codec
    return found


CODECS = _codecs()


def response_encoding(accept_encoding: str, enabled: bool) -> str | None:
    """The Content-Encoding to answer with: the first the client accepts that we have, only when
    it asked with enable_http_compression=1 (ClickHouse never compresses otherwise)."""
    if not enabled:
        return None
    for item in accept_encoding.split(","):
        name = item.split(";", 1)[0].strip().lower()
        if name in CODECS:
            return name
    return None


def compress(data: bytes, encoding: str | None) -> bytes:
    return CODECS[encoding][0](data) if encoding else data


def decompress(data: bytes, encoding: str) -> bytes:
    """A request body sent with Content-Encoding (Grafana's clickhouse-go gzips its bodies)."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return data
    if name not in CODECS:
        raise HttpQueryError(89, f"Unknown compression method: {encoding}")
    try:
        return CODECS[name][1](data)
    except Exception as exc:  # each codec raises its own error type on bad input
        raise HttpQueryError(271, f"cannot decompress the request body ({name}): {exc}") from None


# ---- responses ----------------------------------------------------------------------------

def content_type(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower.startswith(("pretty", "vertical", "markdown", "values", "raw", "lineasstring")):
        return "text/plain; charset=UTF-8"
    if lower == "xml":
        return "application/xml; charset=UTF-8"
    return "application/octet-stream"  # Native, RowBinary*, Parquet, Arrow, ...
