"""The SQL guard's decisions on the real engine's parse (embedded ClickHouse), on both paths:
parseQueryToJSON and the EXPLAIN AST text a server without it gets; and the readonly=1 session
underneath, which holds even where the guard is bypassed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.clickhouse import Database, connect, migrate
from infra.query_server import ReadOnlyReader
from infra.sql_guard import ALLOWED_TABLE_FUNCTIONS, DENIED_CATEGORIES, QueryRefused, SqlGuard
from pipeline.report import REPORT_SQL, TOTALS_SQL
from topics.errors import PermanentError

ALLOWED = [
    REPORT_SQL, TOTALS_SQL,
    "SELECT * FROM numbers(3)",
    "SELECT count() FROM pointsman.results FINAL",
    "SELECT name, rows FROM system.parts WHERE database = 'pointsman' AND active",
    "WITH t AS (SELECT 1 AS x) SELECT x FROM t UNION ALL SELECT 2",
    "SELECT 1 INTERSECT SELECT 1",
    "SELECT * FROM (VALUES (1), (2))",
    "SELECT format('{}-{}', 'a', 'b'), count() OVER ()",
    "SELECT * FROM merge('pointsman', '^results$')",
    "SELECT * FROM view(SELECT 1)",
    "SHOW TABLES FROM pointsman",
    "SHOW DATABASES",
    "DESCRIBE TABLE pointsman.results",
    "DESCRIBE TABLE numbers(3)",
    "SHOW CREATE TABLE pointsman.results",
    "EXISTS TABLE pointsman.results",
    "EXPLAIN SELECT count() FROM pointsman.results",
    "EXPLAIN AST SELECT 1",
    "EXPLAIN indexes = 1 SELECT count() FROM pointsman.results",
    "SELECT 1 -- trailing comment",
    "SELECT 1;",
]

REFUSED = [  # (statement, what the refusal names[, what it names on the EXPLAIN AST path])
    ("INSERT INTO pointsman.schema_migrations (name) VALUES ('x')", "INSERT statements"),
    ("INSERT INTO pointsman.schema_migrations (name) SELECT 'x'", "INSERT statements"),
    ("ALTER TABLE pointsman.results UPDATE error = 'x' WHERE 1", "ALTER statements"),
    ("CREATE TABLE pointsman.x (a Int8) ENGINE = Memory", "CREATE statements"),
    ("DROP TABLE pointsman.results", "DROP statements"),
    ("TRUNCATE TABLE pointsman.results", "TRUNCATE statements"),
    ("SYSTEM STOP MERGES", "SYSTEM statements", "cannot be checked"),  # text: no FORMAT allowed
    ("KILL QUERY WHERE 1", "KILL QUERY statements"),
    ("OPTIMIZE TABLE pointsman.results FINAL", "OPTIMIZE statements"),
    ("SET max_threads = 1", "SET statements"),
    ("USE system", "USE statements"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table function file"),
    ("SELECT file('/etc/passwd')", "function file"),
    ("SELECT length(FILE('/etc/passwd'))", "function FILE"),
    ("SELECT arrayMap(x -> file(x), ['/etc/passwd'])", "function file"),
    ("INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV', 'a UInt8') SELECT 1", "INSERT statements"),
    ("SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString', 'a String')", "table function url"),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/k')", "table function s3"),
    ("SELECT * FROM remote('127.0.0.1:9', system.one)", "table function remote"),
    ("SELECT * FROM cluster('default', system.one)", "table function cluster"),
    ("SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", "table function mysql"),
    ("SELECT * FROM executable('id', 'TSV', 'a String')", "table function executable"),
    ("SELECT * FROM eval('SELECT 1')", "table function eval"),  # would run a query built at runtime
    ("SELECT * FROM loop(url('http://127.0.0.1:9/'))", "table function loop"),
    ("SELECT * FROM numbers(1) WHERE 1 IN (SELECT * FROM url('http://127.0.0.1:9/'))",
     "table function url"),
    ("SELECT * FROM view(SELECT file('/etc/passwd'))", "function file"),
    # APPLY names a function without calling it; the text tree does not even print the name
    ("SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)", "function file", "APPLY(...)"),
    ("SELECT * APPLY(x -> file(x)) FROM (SELECT '/etc/passwd' AS p)", "function file",
     "APPLY(...)"),
    ("DESCRIBE TABLE url('http://127.0.0.1:9/')", "table function url"),
    ("EXPLAIN SELECT * FROM file('/etc/passwd')", "table function file"),
    ("SELECT dictGet('d', 'a', 1)", "function dictGet"),
    ("SELECT aiGenerate('say hi')", "function aiGenerate"),
    ("SELECT hasColumnInTable('127.0.0.1:9', 'system', 'one', 'dummy')", "function hasColumnInTable"),
    ("SELECT count() FROM pointsman.results SETTINGS readonly = 0", "SETTINGS clauses",
     "Cannot modify 'readonly' setting in readonly mode"),
    ("EXPLAIN SELECT 1 SETTINGS max_threads = 1", "SETTINGS clauses", "Cannot modify"),
    ("SELECT naiveBayesClassifier('model', 'text')", "function naiveBayesClassifier"),
    ("SELECT 1 INTO OUTFILE '/tmp/out.txt'", "INTO OUTFILE"),
    ("DESCRIBE TABLE pointsman.results INTO OUTFILE '/tmp/out.txt'", "INTO OUTFILE"),
    # a back-quoted alias with a newline adds a fake line to EXPLAIN AST's text; it cannot hide one
    ("SELECT * FROM numbers(2) AS `n\nExpressionList` INTO OUTFILE '/tmp/out.txt'", "INTO OUTFILE"),
    ("SELECT 1; DROP TABLE pointsman.results", "one statement per request"),
]


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(connect(f"chdb://{tmp_path_factory.mktemp('guard') / 'clickhouse'}"))
    migrate(database.client)
    yield database
    database.client.close()


@pytest.fixture(scope="module")
def reader(writer: Database) -> Iterator[ReadOnlyReader]:
    read_only = ReadOnlyReader(f"chdb://{writer.client.path}")
    yield read_only
    read_only.close()


@pytest.fixture(scope="module", params=["json", "text"])
def guard(request: pytest.FixtureRequest, reader: ReadOnlyReader) -> SqlGuard:
    guard = SqlGuard(reader._run, prefer_json=request.param == "json")
    guard.policy()
    assert guard._has_json == (request.param == "json")  # the engine has parseQueryToJSON
    return guard


@pytest.mark.parametrize("sql", ALLOWED)
def test_reads_pass(guard: SqlGuard, sql: str) -> None:
    guard.check(sql)


@pytest.mark.parametrize("case", REFUSED, ids=[case[0] for case in REFUSED])
def test_everything_else_is_refused_with_the_reason(guard: SqlGuard, case: tuple[str, ...]) -> None:
    sql, named = case[0], case[1] if guard._has_json else case[-1]
    with pytest.raises(QueryRefused) as refused:
        guard.check(sql)
    assert str(refused.value).startswith("refused: ") and named in str(refused.value)
    assert "read-only" in str(refused.value)


def test_apply_of_a_plain_function_passes_where_the_parse_names_it(guard: SqlGuard) -> None:
    if guard._has_json:
        guard.check("SELECT * APPLY(toString) FROM numbers(2)")
    else:
        with pytest.raises(QueryRefused, match="APPLY"):
            guard.check("SELECT * APPLY(toString) FROM numbers(2)")


def test_a_syntax_error_is_reported_as_such_not_as_a_refusal(guard: SqlGuard) -> None:
    with pytest.raises(PermanentError, match="Syntax error") as error:
        guard.check("SELEC 1")
    assert not isinstance(error.value, QueryRefused)


def test_every_table_function_the_engine_knows_is_refused_unless_allowed(
        guard: SqlGuard, reader: ReadOnlyReader) -> None:
    names = [row[0] for row in reader._run("SELECT name FROM system.table_functions", {})]
    assert len(names) > 50
    passed = []
    for name in names:
        args = {"view": "SELECT 1", "viewIfPermitted": "SELECT 1 ELSE null('x UInt8')"}.get(name, "")
        try:
            guard.check(f"SELECT * FROM {name}({args})")
            passed.append(name)
        except QueryRefused as refused:
            assert f"table function {name} is not allowed" in str(refused)
    assert passed and {n.lower() for n in passed} <= ALLOWED_TABLE_FUNCTIONS


def test_every_function_in_an_outside_reaching_category_is_refused(
        guard: SqlGuard, reader: ReadOnlyReader) -> None:
    rows = reader._run("SELECT name, categories FROM system.functions WHERE NOT is_aggregate", {})
    risky = [name for name, category in rows if category in DENIED_CATEGORIES]
    assert any(n.startswith("dictGet") for n in risky) and "aiGenerate" in risky
    for name in risky:
        with pytest.raises(QueryRefused, match=f"function {name} is not allowed"):
            guard.check(f"SELECT {name}(1)")


def test_the_session_itself_is_readonly_without_the_guard(reader: ReadOnlyReader) -> None:
    """Layer (a): statements sent past the guard still cannot write or lift readonly."""
    for sql in ("INSERT INTO pointsman.schema_migrations (name) VALUES ('x')",
                "DROP TABLE pointsman.results",
                "SELECT 1 SETTINGS readonly = 0",
                "SET readonly = 0",
                "SELECT * FROM file('/etc/passwd', 'LineAsString')"):
        with pytest.raises(PermanentError, match="readonly"):
            reader._run(sql, {})
    assert reader._run("SELECT getSetting('readonly')", {}) == [(1,)]
    assert reader._run("SELECT count() FROM system.tables WHERE database = 'pointsman'", {})[0][0] >= 3


def test_the_writer_session_is_untouched(writer: Database, reader: ReadOnlyReader) -> None:
    """readonly=1 lives on the reader's own handle: the same process's writer keeps inserting."""
    writer.insert("pointsman.schema_migrations", [["still-writable"]], ["name"])
    assert writer.query("SELECT getSetting('readonly')")[1] == [(0,)]
    assert ("still-writable",) in reader.query("SELECT name FROM pointsman.schema_migrations")[1]


@pytest.mark.parametrize("sql, named", [
    ("SELECT 1 FORMAT JSONCompact", "JSONCompact"),
    ("SELECT 1\n FORMAT Native", "Native"),
    ("SHOW TABLES FROM pointsman FORMAT JSON", "JSON"),
    ("DESCRIBE TABLE pointsman.results FORMAT TSVWithNames", "TSVWithNames"),  # the text path
    ("SELECT 'FORMAT JSON'", None),
    ("SELECT 1", None),
])
def test_the_check_returns_the_format_the_statement_names(
        guard: SqlGuard, sql: str, named: str | None) -> None:
    """The HTTP endpoint labels its answer (X-ClickHouse-Format, Content-Type) with it."""
    assert guard.check(sql) == named


@pytest.mark.parametrize("sql, code", [
    ("INSERT INTO pointsman.schema_migrations (name) VALUES ('x')", 164),
    ("SET readonly = 0", 164),
    ("SELECT 1 SETTINGS readonly = 0", 164),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 497),
    ("SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString', 'a String')", 497),
    ("SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')", 497),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'TSV', 'a String')", 497),
    ("SELECT * FROM jdbc('jdbc:x', 'd', 't')", 497),
    ("SELECT * FROM odbc('DSN=x', 'd', 't')", 497),
    ("SELECT * FROM s3Cluster('default', 'http://127.0.0.1:9/b/k')", 497),
    ("SELECT * FROM sqlite('/etc/x.db', 't')", 497),
    ("SELECT file('/etc/passwd')", 497),
])
def test_refusals_carry_the_clickhouse_code_the_endpoint_answers_with(
        guard: SqlGuard, sql: str, code: int) -> None:
    """READONLY for a statement or setting, ACCESS_DENIED for what reaches outside."""
    with pytest.raises(QueryRefused) as refused:
        guard.check(sql)
    assert refused.value.code == code, str(refused.value)
