"""The analytics report: per route, count, latency percentiles, cache hits, cost and savings.

Savings compare what the traffic cost with what it would have cost sent all to the LLM
(results.all_llm_cost_usd, workers/pricing.py): 1 - cost / all-LLM cost, over the rows that have
a counterfactual (rows stored before migration 004 have none, nor do calls that failed without
tokens). Cache rows save all of it, an escalated row saves less than nothing (it paid the SLM
attempt and the LLM), so per route the column says where the money is saved.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from infra.query_server import Reader

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


def collect(reader: Reader) -> dict[str, Any]:
    columns, rows = reader.query(REPORT_SQL)
    total_columns, totals = reader.query(TOTALS_SQL)
    return {
        "routes": [dict(zip(columns, row, strict=True)) for row in rows],
        "totals": dict(zip(total_columns, totals[0], strict=True)),
    }


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
