"""ClickHouse through clickhouse-connect: embedded chdb (`chdb:///dir`) or a server (`http://…`).

The embedded engine locks its directory to one process. The process that holds it (the sink)
also serves it read-only over ClickHouse's own HTTP interface (infra/sql_http_server.py), so any
ClickHouse client reads it, and `open_reader` (infra/query_server.py) uses that endpoint when it
is up, so `pointsman sql` and `report` work while the pipeline runs. The
directory holds every answer and prompt, so it is private to its owner (0700).

Inserts translate what goes wrong into the error tree: `RowsRefused` when these rows cannot be
stored (a client-side serialisation error or a server refusal: the caller splits the batch to
find the bad row), `RetryableError` when the database itself is in trouble (unreachable,
overloaded, schema missing: the same rows will do later).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import clickhouse_connect
from clickhouse_connect.driver._chdbclient import ChdbClient
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from topics.errors import InfraError, PermanentError, RetryableError

log = logging.getLogger(__name__)

DATABASE = "pointsman"
DEFAULT_RETENTION_DAYS = 90
PRIVATE_DIR_MODE = 0o700

# clickhouse-connect logs a traceback for every row it cannot serialise; a refused insert is
# reported once by the caller, with the reason, so this would only repeat it at each split
logging.getLogger("clickhouse_connect.driver.transform").setLevel(logging.CRITICAL)

# ClickHouse error codes that say the server or its schema is in trouble, not the rows:
# retrying the same rows later is right, splitting the batch would only dead-letter good rows
_TRANSIENT_CODES = frozenset({
    16, 47, 60, 81,  # NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER, UNKNOWN_TABLE, UNKNOWN_DATABASE
    159, 164, 202, 203, 209, 210,  # TIMEOUT_EXCEEDED, READONLY, TOO_MANY_SIMULTANEOUS_QUERIES,
    #                                NO_FREE_CONNECTION, SOCKET_TIMEOUT, NETWORK_ERROR
    236, 241, 242, 252,  # ABORTED, MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, TOO_MANY_PARTS
    319, 394, 439, 497, 516, 999,  # UNKNOWN_STATUS_OF_INSERT, QUERY_WAS_CANCELLED,
    #                                CANNOT_SCHEDULE_TASK, ACCESS_DENIED, AUTHENTICATION_FAILED, KEEPER
})
_CODE = re.compile(r"Code: (\d+)\.")


class RowsRefused(PermanentError):
    """These rows cannot be stored as they are; `reason` is what ClickHouse or its client said."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_dir(dsn: str) -> Path:
    return Path(dsn.removeprefix("chdb://"))


def private_dir(directory: Path) -> Path:
    """Create `directory` as 0700, or tighten it to 0700 if it exists (whatever the umask)."""
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        try:
            directory.chmod(PRIVATE_DIR_MODE)
        except PermissionError:  # a reader opening someone else's directory: not ours to change
            log.warning("cannot make %s private (not its owner)", directory)
    return directory


def connect(dsn: str) -> Client:
    try:
        if is_embedded(dsn):
            private_dir(embedded_dir(dsn))
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


def migrate(client: Client, upto: str | None = None) -> list[str]:
    """Apply infra/clickhouse/NNN_*.sql files not applied yet, in order; return their names.

    Each file is rerunnable from its first statement (a crash midway leaves nothing that a rerun
    trips on); it is recorded as applied only when all its statements have run. `upto` stops
    after that file (tests build an old schema with it)."""
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
        if upto is not None and file.name > upto:
            break
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


# the bodies whose TTL is the retention setting: (table, column, type and codec restated)
RETAINED_BODIES = (
    ("results", "answer", "String CODEC(ZSTD(3))"),
    ("results", "prompt", "String CODEC(ZSTD(3))"),
    ("results", "messages", "String CODEC(ZSTD(3))"),
    ("dead_letters", "raw", "String CODEC(ZSTD(3))"),
    ("evaluations", "question", "String CODEC(ZSTD(3))"),
    ("evaluations", "served_answer", "String CODEC(ZSTD(3))"),
    ("evaluations", "shadow_answer", "String CODEC(ZSTD(3))"),
)


def retention_days(database: Database, table: str, column: str) -> int | None:
    """Days the column is kept after the row was written, from its TTL; None: kept forever."""
    ddl = database.query(
        f"SELECT create_table_query FROM system.tables WHERE database = '{DATABASE}' AND name = '{table}'"
    )[1][0][0]
    found = re.search(rf"`{column}` [^,]*? TTL toDateTime\(inserted_at\) \+ toIntervalDay\((\d+)\)", ddl)
    return int(found.group(1)) if found else None


def apply_retention(database: Database, days: int) -> list[str]:
    """Keep answers and dead-letter bodies `days` after the row was written (0: forever).

    Run after migrations; changes only what differs, so a restart with the same setting costs
    nothing. A shorter retention erases older bodies at the next merge; a longer one cannot bring
    back bodies already erased."""
    changed = []
    for table, column, kind in RETAINED_BODIES:
        wanted = days if days > 0 else None
        if retention_days(database, table, column) == wanted:
            continue
        ttl = (f"MODIFY COLUMN {column} {kind} TTL toDateTime(inserted_at) + INTERVAL {days} DAY"
               if wanted else f"MODIFY COLUMN {column} REMOVE TTL")
        database.command(f"ALTER TABLE {DATABASE}.{table} {ttl}")
        changed.append(f"{table}.{column}")
    return changed


def _insert_error(exc: Exception) -> tuple[bool, str]:
    """(transient, reason) for an exception raised by an insert."""
    text = str(exc).strip()
    if exc.__cause__ is not None and str(exc.__cause__) not in text:
        text = f"{text} ({exc.__cause__})"  # the serialiser's own words: 'argument out of range'
    if isinstance(exc, OperationalError):
        return True, text  # connection refused, reset, timed out
    code = _CODE.search(text)
    if code and int(code.group(1)) in _TRANSIENT_CODES:
        # TOO_MANY_PARTS is transient, but the same code also says one block spans too many
        # partitions, which depends on the rows: splitting the batch fixes that one
        return "partitions for single INSERT" not in text, text
    return False, text


def _batch_file(body: bytes) -> str:
    """`body` in a new temporary file (0600); RetryableError when it cannot be written (a full
    or unwritable temp dir: the same rows will do later)."""
    path = None
    try:
        fd, path = tempfile.mkstemp(prefix="pointsman-insert-", suffix=".jsonl")
        with os.fdopen(fd, "wb") as file:
            file.write(body)
        return path
    except OSError as exc:
        if path is not None:
            os.unlink(path)
        raise RetryableError(f"cannot write the insert's batch file: {exc}") from None


def _quoted(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Database:
    """A clickhouse-connect client shared by threads of one process (inserts and queries)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        # one engine call at a time; a read-only session on the same embedded engine shares it
        self.lock = threading.Lock()
        self.embedded = isinstance(client, ChdbClient)  # the engine runs in this process

    def insert(self, table: str, rows: list[list[Any]], columns: list[str],
               settings: dict[str, Any] | None = None) -> None:
        """Insert, or raise RowsRefused (these rows) or RetryableError (the database)."""
        with self.lock:
            try:
                self.client.insert(table, rows, column_names=columns, settings=settings)
                return
            except Exception as exc:  # the serialiser raises struct/Unicode/Type errors too
                transient, reason = _insert_error(exc)
        self._insert_failed(transient, reason)

    def insert_json(self, table: str, columns: list[str], select: str, structure: str,
                    body: bytes, settings: dict[str, Any]) -> None:
        """Insert what `select` computes from `body`, JSONEachRow read as `structure`: the
        engine parses the rows itself. Raises as `insert` does. Embedded engine only: it reads
        the batch from a temporary file (0600, gone after), as clickhouse-connect's own chdb
        inserts do."""
        if not self.embedded:
            raise PermanentError("insert_json needs the embedded engine")
        path = _batch_file(body)
        try:
            setting_list = ", ".join(f"{k} = {v}" for k, v in settings.items())
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} "
                   f"FROM file({_quoted(path)}, 'JSONEachRow', {_quoted(structure)})"
                   + (f" SETTINGS {setting_list}" if settings else ""))
            with self.lock:
                try:
                    self.client.command(sql)
                    return
                except Exception as exc:
                    transient, reason = _insert_error(exc)
        finally:
            os.unlink(path)
        self._insert_failed(transient, reason)

    def _insert_failed(self, transient: bool, reason: str) -> NoReturn:
        """RetryableError when the database is in trouble (so the rows will do later), else
        RowsRefused: these rows."""
        if transient or not self.reachable():
            raise RetryableError(f"ClickHouse insert failed: {reason}")
        raise RowsRefused(reason)

    def reachable(self) -> bool:
        """A probe: whether the database answers at all (so a refusal is about the rows)."""
        with self.lock:
            try:
                self.client.query("SELECT 1")
                return True
            except Exception:  # any failure of a trivial query means "not now"
                return False

    def command(self, sql: str) -> None:
        with self.lock:
            try:
                self.client.command(sql)
            except ClickHouseError as exc:
                raise PermanentError(str(exc).strip()) from None

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.lock:
            try:
                result = self.client.query(sql)
            except ClickHouseError as exc:
                raise PermanentError(str(exc).strip()) from None
            return list(result.column_names), result.result_rows
