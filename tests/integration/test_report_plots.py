"""`pointsman report --png / --html` on the real engine: the four panels drawn from results FINAL
into a real PNG, and a page that holds it with the report's tables, every stored value escaped."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from infra.clickhouse import Database
from pipeline.report import collect
from pipeline.report_plots import bucket_seconds, collect_series, write_html, write_png
from pipeline.sink import SinkWriter
from tests.integration.test_sink_poison import TOPICS, db, messages, opened, result  # noqa: F401

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stored(db: Database) -> list:  # noqa: F811
    rows = []
    for i in range(40):
        route = ("slm", "llm", "cache", "semantic_cache")[i % 4]
        rows.append(result(f"q{i}", route=route, tenant="<b>acme</b>" if i == 0 else "acme",
                           submitted_at=1.7e9 + 600 * i, completed_at=1.7e9 + 600 * i + 1,
                           cost_usd=0.0 if "cache" in route else 0.001,
                           all_llm_cost_usd=0.002))
        rows[-1].timings.total_ms = 100.0 + 10 * i
    SinkWriter(db, TOPICS)(messages(rows))
    return rows


def test_the_series_count_each_query_once_in_buckets_that_fit_the_span(db: Database) -> None:  # noqa: F811
    rows = stored(db)
    SinkWriter(db, TOPICS)(messages(rows[:5]))  # a replay of the first five
    series = collect_series(db)
    assert series["bucket_s"] == bucket_seconds(int(1.7e9), int(1.7e9 + 600 * 39)) == 900
    assert sum(sum(p["routes"].values()) for p in series["times"]) == 40
    assert set(series["latency"]) == {"slm", "llm", "cache", "semantic_cache"}
    assert series["latency"]["slm"] == sorted(series["latency"]["slm"])  # quantiles rise
    assert sum(p["all_llm"] for p in series["times"]) == pytest.approx(40 * 0.002)


def test_png_and_html_are_real_and_escape_what_is_stored(db: Database, tmp_path: Path) -> None:  # noqa: F811
    import matplotlib.image

    stored(db)
    series = collect_series(db)
    png = tmp_path / "report.png"
    write_png(series, png)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(io.BytesIO(data)).shape
    assert (width, height) == (1200, 800)
    page = tmp_path / "report.html"
    write_html(collect(db), series, page)
    text = page.read_text()
    inline = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert inline and base64.b64decode(inline.group(1))[:8] == PNG_SIGNATURE
    assert "<td>semantic_cache</td>" in text and "40 queries" in text
    assert "<b>acme</b>" not in text  # a stored value never becomes markup


def test_bucket_widths_are_round_and_at_least_a_minute() -> None:
    assert bucket_seconds(0, 0) == 60
    assert bucket_seconds(0, 3600) == 60
    assert bucket_seconds(0, 86_400) == 3600
    assert bucket_seconds(0, 90 * 86_400) == 7 * 86_400
