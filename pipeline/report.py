"""The analytics report: per route, count, latency percentiles, cache hits, cost and savings; and
the judged quality of shadow-evaluated routes, with the shadow calls' cost kept apart from serving.

Savings compare what the traffic cost with what it would have cost sent all to the LLM
(results.all_llm_cost_usd, workers/pricing.py): 1 - cost / all-LLM cost, over the rows that have
a counterfactual (rows stored before migration 004 have none, nor do calls that failed without
tokens). Cache rows save all of it, an escalated row saves less than nothing (it paid the SLM
attempt and the LLM), so per route the column says where the money is saved.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from infra.query_server import Reader
from topics.errors import PointsmanError

# 1 - cost / counterfactual over the rows that have one; NULL where none has. The columns are
# named through the table (r.) because the sums' aliases shadow them (ClickHouse prefers aliases)
SAVINGS = ("if(sumIf(r.all_llm_cost_usd, r.all_llm_cost_usd > 0) > 0, round(1 - sumIf(r.cost_usd, "
           "r.all_llm_cost_usd > 0) / sumIf(r.all_llm_cost_usd, r.all_llm_cost_usd > 0), 4), NULL)")

REPORT_SQL = f"""
SELECT
    route,
    count() AS queries,
    round(quantile(0.5)(total_ms)) AS p50_ms,
    round(quantile(0.95)(total_ms)) AS p95_ms,
    round(quantile(0.99)(total_ms)) AS p99_ms,
    round(avg(inference_ms)) AS infer_ms,
    sum(prompt_tokens + completion_tokens) AS tokens,
    round(sum(cost_usd), 5) AS cost_usd,
    round(sum(all_llm_cost_usd), 5) AS all_llm_cost_usd,
    {SAVINGS} AS savings,
    countIf(error != '') AS errors
FROM pointsman.results AS r FINAL
GROUP BY route
ORDER BY queries DESC
"""

TOTALS_SQL = f"""
SELECT
    count() AS queries,
    countIf(route IN ('cache', 'semantic_cache', 'coalesced')) / greatest(count(), 1) AS hit_rate,
    round(sum(cost_usd), 6) AS cost_usd,
    round(sum(all_llm_cost_usd), 6) AS all_llm_cost_usd,
    {SAVINGS} AS savings,
    (SELECT count() FROM pointsman.dead_letters FINAL) AS dead_letters
FROM pointsman.results AS r FINAL
"""


# the tenants that cost the most, with what they would have cost all-LLM and the savings
TENANTS_SQL = f"""
SELECT
    tenant,
    count() AS queries,
    round(sum(cost_usd), 6) AS cost_usd,
    round(sum(all_llm_cost_usd), 6) AS all_llm_cost_usd,
    {SAVINGS} AS savings,
    countIf(error != '') AS errors
FROM pointsman.results AS r FINAL
GROUP BY tenant
ORDER BY cost_usd DESC, queries DESC, tenant
LIMIT 10
"""

# dead letters by the kind of their reason: its text up to the first colon ("not JSON", "llm
# failed", "backfill job J", "sink"), so values inside a reason do not split one kind into many
LETTERS_SQL = """
SELECT splitByChar(':', reason)[1] AS kind, count() AS letters, any(reason) AS example
FROM pointsman.dead_letters FINAL
GROUP BY kind
ORDER BY letters DESC, kind
LIMIT 20
"""

NEAR_MISS = "semantic_near_miss"  # a judged route that served nothing (topics/schemas.py)

# shadow evaluations (topics/shadow.py): per served route and tenant, how far the served answers
# agree with the LLM's (score in [0, 1]), and what the shadow calls cost: never serving cost
EVALUATIONS_SQL = """
SELECT
    route,
    tenant,
    count() AS judged,
    round(avg(score), 3) AS mean_score,
    countIf(score < 0.5) AS disagreed,
    round(sum(served_cost_usd), 6) AS served_cost_usd,
    round(sum(shadow_cost_usd), 6) AS shadow_cost_usd
FROM pointsman.evaluations FINAL
GROUP BY route, tenant
ORDER BY route, judged DESC, tenant
"""


def collect(reader: Reader) -> dict[str, Any]:
    columns, rows = reader.query(REPORT_SQL)
    total_columns, totals = reader.query(TOTALS_SQL)
    return {
        "routes": [_plain(columns, row) for row in rows],
        "totals": _plain(total_columns, totals[0]),
        "tenants": _rows(reader, TENANTS_SQL),
        "dead_letters": _rows(reader, LETTERS_SQL),
        "evaluations": collect_evaluations(reader),
    }


def _plain(columns: list[str], row: Any) -> dict[str, Any]:
    """A row as a dict; costs are summed as Decimal (no float noise) and rounded in SQL, then
    handed on as floats, which JSON writes as numbers (a rounded Decimal's float prints the same)."""
    return {c: float(v) if isinstance(v, Decimal) else v for c, v in zip(columns, row, strict=True)}


def _rows(reader: Reader, sql: str) -> list[dict[str, Any]]:
    columns, rows = reader.query(sql)
    return [_plain(columns, row) for row in rows]


def collect_evaluations(reader: Reader) -> list[dict[str, Any]]:
    """Judged quality per route and tenant; empty on a database from before evaluations."""
    try:
        columns, rows = reader.query(EVALUATIONS_SQL)
    except PointsmanError as exc:
        if "UNKNOWN_TABLE" in str(exc) or "does not exist" in str(exc):
            return []
        raise
    return [_plain(columns, row) for row in rows]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


# shorter headers where the JSON keys would not fit a 120-column terminal
HEADERS = {"all_llm_cost_usd": "all_llm_usd"}


def render(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Pointsman — outcomes by route")
    columns = ("route", "queries", "p50_ms", "p95_ms", "p99_ms", "infer_ms", "tokens", "cost_usd",
               "all_llm_cost_usd", "savings", "errors")
    for name in columns:
        table.add_column(HEADERS.get(name, name), justify="left" if name == "route" else "right",
                         no_wrap=True)
    for row in report["routes"]:
        table.add_row(*(_percent(row[c]) if c == "savings" else _cell(row[c]) for c in columns))
    console.print(table)
    totals = report["totals"]
    console.print(
        f"queries {totals['queries']}  ·  cache hit rate (exact + semantic + coalesced) "
        f"{float(totals['hit_rate']):.1%}  ·  cost ${float(totals['cost_usd']):.6f}  ·  "
        f"all-LLM ${float(totals['all_llm_cost_usd']):.6f}  ·  "
        f"savings {_percent(totals['savings'])}  ·  dead letters {totals['dead_letters']}"
    )
    _render_rows("The most costly tenants", report.get("tenants", []), console,
                 ("tenant", "queries", "cost_usd", "all_llm_cost_usd", "savings", "errors"))
    _render_rows("Dead letters by reason", report.get("dead_letters", []), console,
                 ("kind", "letters", "example"))
    render_evaluations(report.get("evaluations", []), console)


def _render_rows(title: str, rows: list[dict[str, Any]], console: Console,
                 columns: tuple[str, ...]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for name in columns:
        table.add_column(HEADERS.get(name, name),
                         justify="left" if name in ("tenant", "kind", "example") else "right",
                         overflow="fold")
    for row in rows:  # Text: a stored reason or tenant is shown as is, never read as markup
        table.add_row(*(Text(_percent(row[c]) if c == "savings" else _cell(row[c]))
                        for c in columns))
    console.print(table)


def render_evaluations(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        return
    table = Table(title="Judged quality — shadow evaluation (score: agreement with the LLM, 0-1)")
    columns = ("route", "tenant", "judged", "mean_score", "disagreed", "served_cost_usd",
               "shadow_cost_usd")
    for name in columns:
        table.add_column(name, justify="left" if name in ("route", "tenant") else "right",
                         no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console.print(table)
    shadow = sum(float(row["shadow_cost_usd"]) for row in rows)
    console.print(f"shadow calls cost ${shadow:.6f}, counted apart: not part of the serving cost above")
    if any(row["route"] == NEAR_MISS for row in rows):
        console.print(f"{NEAR_MISS}: explored near misses of the semantic cache, answered fresh; "
                      "the cached answer was judged, never served")
