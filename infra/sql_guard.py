"""Decides whether a SQL text is a read the query endpoint may run, from ClickHouse's own parse.

The engine parses (never runs) the text: `parseQueryToJSON` gives the AST as JSON; statements it
cannot serialise (DESCRIBE, SHOW CREATE, EXISTS, SHOW PROCESSLIST) and servers without it fall
back to `EXPLAIN AST`'s text tree, which is only ever sent once the text is known to be a single
statement. The decisions below are pure functions of that parse and of a `Policy` built from the
engine's own catalogue (system.table_functions, system.functions), so the coming
ClickHouse-HTTP-compatible endpoint can reuse them.

Allowed: SELECT / WITH / UNION / INTERSECT, SHOW, DESCRIBE, EXISTS and EXPLAIN of those.
Refused: anything else, more than one statement, SETTINGS clauses, INTO OUTFILE, any table
function not on a short allow list (url, s3, file, remote, mysql, postgresql, hdfs, jdbc, odbc,
executable, ... are all refused), and scalar functions that reach the filesystem, the network,
other servers or dictionaries. Settings sent beside a query (the HTTP endpoint's URL parameters)
pass `setting_refusal`: limits, timeouts and output formatting only. This is the second layer:
the session also runs with readonly=1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from topics.errors import PermanentError


class QueryRefused(PermanentError):
    """A statement the read-only endpoint will not run; the text says why. `code` is the
    ClickHouse error code the HTTP endpoint answers with: READONLY (164) for a statement or a
    setting, ACCESS_DENIED (497) for a function that reaches outside."""

    def __init__(self, message: str, code: int = 164) -> None:
        super().__init__(message)
        self.code = code


# Table functions that only generate rows or read this database's own tables.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "sqlstandardvalues",  # FROM (VALUES …)
    "generaterandom", "generate_series", "generateseries", "primes", "null", "merge", "view",
})

# Scalar functions that share a name with a table function and are harmless as scalars
# (format() builds a string, fuzzQuery() perturbs one); `file` is refused both ways.
_HARMLESS_SCALAR_HOMONYMS = frozenset({"format", "fuzzquery"})

# Scalars that reach outside the query: files, other hosts, Keeper, dictionaries' sources, models.
DENIED_FUNCTIONS = frozenset({
    "file", "filesystemavailable", "filesystemcapacity", "filesystemunreserved",
    "hascolumnintable",  # takes a host name and connects to it
    "generateserialid",  # writes to Keeper
    "naivebayesclassifier", "naivebayesclassifierwithprob", "naivebayesclassifierwithallprobs",
    "catboostevaluate", "modelevaluate",  # load models from server files
})
_DENIED_PREFIXES = ("dict", "ai", "region")  # dictGet*, aiGenerate/AI* (LLM calls), regionTo*
# system.functions categories whose members reach outside (LLM APIs, dictionary sources) or
# read the server's binary and write its log (Introspection)
DENIED_CATEGORIES = frozenset({"AI", "Dictionary", "Embedded Dictionary", "Introspection"})

_READ_ROOTS_JSON = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery"})
_TEXT_ROOT_PREFIXES = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery",
                       "Show", "Describe", "Exists")


@dataclass(frozen=True)
class Policy:
    denied_functions: frozenset[str]  # lower-case names refused wherever they appear
    table_functions: frozenset[str]  # every table function the engine knows, lower-case

    @classmethod
    def from_catalogue(cls, table_functions: Iterable[str],
                       functions: Iterable[tuple[str, str, str]]) -> Policy:
        """`functions`: (name, categories, alias_to) rows of system.functions."""
        known = frozenset(name.lower() for name in table_functions)
        rows = list(functions)
        by_category = {name.lower() for name, category, _ in rows if category in DENIED_CATEGORIES}
        aliases = {name.lower() for name, _, target in rows if target.lower() in by_category}
        denied = (DENIED_FUNCTIONS | by_category | aliases
                  | (known - ALLOWED_TABLE_FUNCTIONS - _HARMLESS_SCALAR_HOMONYMS))
        return cls(frozenset(denied), known)

    def function_refusal(self, name: str) -> str | None:
        """For a function anywhere but directly in FROM (a scalar, or a table function nested in
        another one's arguments)."""
        lower = name.lower()
        if lower in DENIED_FUNCTIONS or lower.startswith(_DENIED_PREFIXES):
            return f"function {name} is not allowed (it reaches outside the database)"
        if lower in self.denied_functions:
            what = "table function" if lower in self.table_functions else "function"
            return f"{what} {name} is not allowed"
        return None

    def table_function_refusal(self, name: str) -> str | None:
        if name.lower() in ALLOWED_TABLE_FUNCTIONS:
            return None
        return f"table function {name} is not allowed"


READONLY, ACCESS_DENIED = 164, 497


def _refuse(reason: str, code: int = READONLY) -> QueryRefused:
    return QueryRefused(f"refused: {reason}; the query endpoint is read-only", code)


# ---- settings sent beside a query (HTTP URL parameters) -------------------------------------

# Settings a client may send with a read: limits, timeouts, output formatting. Grafana sends
# max_execution_time and limit; clickhouse-connect sends what system.settings says it may.
# Everything else is refused: some settings read files (format_schema, format_template_*),
# reach the network (format_avro_schema_registry_url) or show secrets.
ALLOWED_SETTINGS = frozenset({
    "limit", "offset", "max_execution_time", "max_execution_time_leaf", "timeout_overflow_mode",
    "max_result_rows", "max_result_bytes", "result_overflow_mode", "max_rows_to_read",
    "max_bytes_to_read", "read_overflow_mode", "max_block_size", "max_threads", "max_memory_usage",
    "max_query_size", "extremes", "totals_mode", "join_use_nulls", "transform_null_in",
    "aggregate_functions_null_for_empty", "prefer_column_name_to_alias", "session_timezone",
    "date_time_output_format", "date_time_input_format", "cast_string_to_dynamic_use_inference",
    "readonly",  # only to 1 or 2: the session runs at readonly=1 whatever is sent
})
_ALLOWED_SETTING_PREFIXES = ("output_format_", "format_csv_", "format_tsv_", "format_custom_")
_DENIED_SETTINGS = frozenset({"output_format_schema"})  # writes the schema to a file


def setting_refusal(name: str, value: str, known: frozenset[str] | None = None) -> QueryRefused | None:
    """Why a setting sent with a query is refused, or None. `known`: the engine's setting names
    (an unknown name is reported as such rather than as refused)."""
    lower = name.lower()
    if known is not None and name not in known:
        return QueryRefused(f"Unknown setting '{name}'", code=115)
    if lower == "readonly" and value.strip() not in ("1", "2"):
        return QueryRefused("refused: Cannot modify 'readonly' setting in readonly mode; the query "
                            "endpoint is read-only", READONLY)
    if lower in ALLOWED_SETTINGS or (lower.startswith(_ALLOWED_SETTING_PREFIXES)
                                     and lower not in _DENIED_SETTINGS):
        return None
    return QueryRefused(f"refused: Cannot modify '{name}' setting in readonly mode; the query "
                        "endpoint is read-only", READONLY)


# ---- the JSON AST (parseQueryToJSON) --------------------------------------------------------


def check_json_ast(tree: dict[str, Any], policy: Policy) -> None:
    """Raise QueryRefused unless the parsed statement is an allowed read."""
    root = _explained(tree)
    kind = str(root.get("type", ""))
    if kind not in _READ_ROOTS_JSON and not (kind.startswith("Show") and kind.endswith("Query")):
        if kind == "DropQuery":  # DROP, DETACH and TRUNCATE share a node
            kind = str(root.get("kind", kind))
        raise _refuse(f"{_statement_name(kind)} statements are not allowed")
    explain_options: set[int] = set()  # EXPLAIN indexes = 1 …: options of EXPLAIN, not settings
    for key, node in _walk(tree, ""):
        if node.get("type") == "ExplainQuery" and isinstance(node.get("settings"), dict):
            explain_options.add(id(node["settings"]))
        if node.get("out_file") is not None or node.get("is_into_outfile_with_stdout"):
            raise _refuse("INTO OUTFILE is not allowed")
        if node.get("type") == "SetQuery" and id(node) not in explain_options:
            raise _refuse("SETTINGS clauses are not allowed")
        if node.get("type") == "Function":
            name = str(node.get("name", ""))
            reason = (policy.table_function_refusal(name) if key == "table_function"
                      else policy.function_refusal(name))
            if reason:
                raise _refuse(reason, ACCESS_DENIED)
        for field, value in node.items():  # a function named, not called: SELECT * APPLY(file)
            if "func" in field.lower() and isinstance(value, str):
                reason = policy.function_refusal(value)
                if reason:
                    raise _refuse(reason, ACCESS_DENIED)


def _explained(tree: dict[str, Any]) -> dict[str, Any]:
    while tree.get("type") == "ExplainQuery" and isinstance(tree.get("query"), dict):
        tree = tree["query"]
    return tree


def _walk(value: Any, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in the tree with the key it hangs under; nothing is skipped."""
    if isinstance(value, dict):
        yield key, value
        for child_key, child in value.items():
            yield from _walk(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child, key)


def _statement_name(kind: str) -> str:
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", kind.removesuffix("Query")).upper()
    return words or "this"


# ---- the text AST (EXPLAIN AST) -------------------------------------------------------------


def check_text_ast(lines: Sequence[str], policy: Policy) -> None:
    """The same decision from `EXPLAIN AST` lines. Names and aliases are printed raw there, so a
    crafted identifier can add lines but never remove or rename a real one: every rule below
    only refuses on what it sees, and the root is the first word of the first line."""
    if not lines:
        raise _refuse("the statement could not be checked")
    nodes = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in lines]
    root = nodes[0][1].split(" ", 1)[0]
    if root == "Explain":  # the explained statement is the next line, after EXPLAIN's options
        if len(nodes) > 1 and nodes[1] == (1, "Set"):
            del nodes[1]
        if len(nodes) < 2 or nodes[1][0] != 1:
            raise _refuse("the statement could not be checked")
        root = nodes[1][1].split(" ", 1)[0]
    if not root.startswith(_TEXT_ROOT_PREFIXES):
        raise _refuse(f"{_statement_name(root)} statements are not allowed")
    after_table_expression = False
    for depth, text in nodes:
        word, _, rest = text.partition(" ")
        if word == "Set":
            raise _refuse("SETTINGS clauses are not allowed")
        if word == "Literal" and depth == 1:  # only INTO OUTFILE hangs a literal off the root
            raise _refuse("INTO OUTFILE is not allowed")
        if word == "ColumnsApplyTransformer":  # APPLY(f): the text tree does not print f
            raise _refuse("APPLY(...) cannot be checked on this server")
        if word == "Function":
            name = rest.split(" ", 1)[0]
            reason = (policy.table_function_refusal(name) if after_table_expression
                      else policy.function_refusal(name))
            if reason:
                raise _refuse(reason, ACCESS_DENIED)
        after_table_expression = word == "TableExpression"


# ---- asking the engine to parse ---------------------------------------------------------------

# run(sql, parameters) -> rows; parameters are bound server-side as {q:String}, so the text to
# check travels as a string value and is never executed.
Run = Callable[[str, dict[str, str]], Sequence[Sequence[Any]]]

_NO_JSON_FORM = "not supported by parseQueryToJSON"  # parsed as one statement, but no JSON form
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


@dataclass
class SqlGuard:
    run: Run
    prefer_json: bool = True  # False: always the EXPLAIN AST path (what servers before 26.8 get)
    _policy: Policy | None = None
    _has_json: bool = False

    def policy(self) -> Policy:
        if self._policy is None:
            tables = [str(row[0]) for row in self.run("SELECT name FROM system.table_functions", {})]
            try:
                rows = self.run("SELECT name, categories, alias_to FROM system.functions", {})
            except PermanentError:  # servers from before system.functions had `categories`
                rows = self.run("SELECT name, '', alias_to FROM system.functions", {})
            functions = [(str(name), str(category), str(alias)) for name, category, alias in rows]
            self._has_json = self.prefer_json and any(
                name == "parseQueryToJSON" for name, _, _ in functions)
            self._policy = Policy.from_catalogue(tables, functions)
        return self._policy

    def check(self, sql: str) -> str | None:
        """Raise QueryRefused (or PermanentError for a syntax error) unless `sql` may run; return
        the output format its FORMAT clause names, if any (the HTTP endpoint labels its answer)."""
        policy = self.policy()
        if self._has_json:
            try:
                tree_text = self.run("SELECT parseQueryToJSON({q:String})", {"q": sql})[0][0]
            except PermanentError as exc:
                if _NO_JSON_FORM not in str(exc):
                    raise _parse_failure(exc) from None
                # DESCRIBE, SHOW CREATE, EXISTS, INSERT … VALUES: one statement; check its text tree
            else:
                tree = json.loads(tree_text)
                check_json_ast(tree, policy)
                named = tree.get("format_ast")
                return str(named["name"]) if isinstance(named, dict) and "name" in named else None
        else:
            try:  # one statement only, checked without running anything
                self.run("SELECT formatQuery({q:String})", {"q": sql})
            except PermanentError as exc:
                raise _parse_failure(exc) from None
        try:
            rows = self.run(f"EXPLAIN AST {sql}", {})
        except PermanentError as exc:  # e.g. SYSTEM takes no FORMAT; SETTINGS in a readonly session
            raise _refuse(f"this statement cannot be checked ({_first_line(exc)})") from None
        check_text_ast("\n".join(str(row[0]) for row in rows).split("\n"), policy)
        # the text tree prints FORMAT as a bare identifier, like a table's: take it from the text
        found = _TRAILING_FORMAT.search(sql)
        return found.group(1) if found else None


def _parse_failure(exc: PermanentError) -> PermanentError:
    text = str(exc)
    if "Multi-statements are not allowed" in text:
        return _refuse("one statement per request")
    return PermanentError(text)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]
