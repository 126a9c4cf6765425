"""The report drawn: latency distribution per route, cost against the all-LLM counterfactual over
time, route share over time and cache hit rate over time, as one PNG (matplotlib, no display),
or an HTML page holding that PNG and the report's tables (self-contained: the image inline).

The series come from results FINAL, so a replayed row counts once. Time buckets fit the span of
the data: about 60 buckets, at least a minute each.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from infra.query_server import Reader

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
HITS = ("cache", "semantic_cache", "coalesced")  # the report's hit rate counts the same routes

LATENCY_SQL = f"""
SELECT route, quantiles({', '.join(map(str, QUANTILES))})(total_ms) AS ms
FROM pointsman.results FINAL WHERE error = '' GROUP BY route ORDER BY route
"""
SPAN_SQL = ("SELECT toUnixTimestamp(min(submitted_at)), toUnixTimestamp(max(submitted_at)) "
            "FROM pointsman.results")
SERIES_SQL = """
SELECT toUnixTimestamp(toStartOfInterval(submitted_at, INTERVAL {bucket} SECOND)) AS t, route,
       count() AS queries, sum(cost_usd) AS spent, sum(all_llm_cost_usd) AS all_llm
FROM pointsman.results FINAL GROUP BY t, route ORDER BY t, route
"""


def bucket_seconds(first: int, last: int, buckets: int = 60) -> int:
    """A round bucket width giving about `buckets` buckets over [first, last], at least 60 s."""
    width = max(60, (last - first) // buckets)
    for step in (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400):
        if width <= step:
            return step
    return width


def collect_series(reader: Reader) -> dict[str, Any]:
    _, latency = reader.query(LATENCY_SQL)
    first, last = reader.query(SPAN_SQL)[1][0]
    bucket = bucket_seconds(int(first or 0), int(last or 0))
    _, rows = reader.query(SERIES_SQL.format(bucket=bucket))
    times: dict[int, dict[str, Any]] = {}
    for t, route, queries, spent, all_llm in rows:
        point = times.setdefault(int(t), {"routes": {}, "spent": 0.0, "all_llm": 0.0})
        point["routes"][str(route)] = int(queries)
        point["spent"] += float(spent)
        point["all_llm"] += float(all_llm)
    return {"bucket_s": bucket, "latency": {str(route): list(ms) for route, ms in latency},
            "times": [{"t": t, **point} for t, point in sorted(times.items())]}


def figure_png(series: dict[str, Any]) -> bytes:
    """The four panels as one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt

    fig, ((lat, cost), (share, hits)) = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    for route, ms in series["latency"].items():
        lat.plot([max(m, 0.01) for m in ms], QUANTILES, marker=".", label=route)
    lat.set(xscale="log", xlabel="total latency, ms (log)", ylabel="share of answers at or under",
            title="Latency distribution per route")
    times = series["times"]
    when = [datetime.fromtimestamp(p["t"], tz=UTC) for p in times]
    cost.plot(when, [p["spent"] for p in times], label="cost")
    cost.plot(when, [p["all_llm"] for p in times], label="all-LLM counterfactual", linestyle="--")
    cost.set(ylabel=f"USD per {series['bucket_s']} s", title="Cost against all-LLM")
    routes = sorted({r for p in times for r in p["routes"]})
    totals = [max(sum(p["routes"].values()), 1) for p in times]
    if times:
        share.stackplot(when, *[[p["routes"].get(r, 0) / n for p, n in zip(times, totals, strict=True)]
                                for r in routes], labels=routes)
    share.set(ylim=(0, 1), ylabel="share of queries", title="Route share")
    hits.plot(when, [sum(p["routes"].get(r, 0) for r in HITS) / n
                     for p, n in zip(times, totals, strict=True)], marker=".")
    hits.set(ylim=(0, 1), ylabel="hit rate", title="Cache hit rate (exact, semantic, coalesced)")
    for axis in (lat, cost, share):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    for axis in (cost, share, hits):
        axis.tick_params(axis="x", labelrotation=30, labelsize="small")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def write_png(series: dict[str, Any], path: Path) -> None:
    path.write_bytes(figure_png(series))


def write_html(report: dict[str, Any], series: dict[str, Any], path: Path) -> None:
    """A page with the totals, the per-route and judged-quality tables, and the figure inline."""
    image = base64.b64encode(figure_png(series)).decode()
    totals = report["totals"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Pointsman report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
             "<h1>Pointsman report</h1>",
             f"<p id='totals'>{_e(totals.get('queries'))} queries; hit rate "
             f"{_e(_percent(totals.get('hit_rate')))}; cost ${_e(totals.get('cost_usd'))} against "
             f"${_e(totals.get('all_llm_cost_usd'))} all-LLM (savings "
             f"{_e(_percent(totals.get('savings')))}); {_e(totals.get('dead_letters'))} dead letters</p>",
             _table("Per route", report["routes"]),
             _table("The most costly tenants", report.get("tenants", [])),
             _table("Dead letters by reason", report.get("dead_letters", [])),
             _table("Judged quality (shadow evaluations)", report.get("evaluations", [])),
             f"<img id='figure' alt='latency, cost, route share and hit rate' "
             f"src='data:image/png;base64,{image}'>",
             "</body></html>"]
    path.write_text("\n".join(parts), encoding="utf-8")


def _table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"<h2>{_e(title)}</h2><p>none yet</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<h2>{_e(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1%}"


def _e(value: Any) -> str:
    """Stored text is shown, never run: every value is escaped."""
    return html.escape("" if value is None else str(value))
