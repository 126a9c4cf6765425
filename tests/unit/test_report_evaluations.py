"""The report's judged-quality table says what a near-miss row is: judged, never served."""

from __future__ import annotations

from rich.console import Console

from pipeline.report import NEAR_MISS, render_evaluations


def rendered(rows: list[dict]) -> str:
    console = Console(record=True, width=200)
    render_evaluations(rows, console)
    return console.export_text()


def row(route: str, shadow_cost: float) -> dict:
    return {"route": route, "tenant": "acme", "judged": 3, "mean_score": 0.8, "disagreed": 1,
            "served_cost_usd": 0.0001, "shadow_cost_usd": shadow_cost}


def test_near_miss_rows_are_named_as_never_served() -> None:
    text = rendered([row("slm", 0.002), row(NEAR_MISS, 0.001)])
    assert "shadow calls cost $0.003000, counted apart" in text
    assert f"{NEAR_MISS}: explored near misses" in text and "never served" in text


def test_no_near_miss_line_without_such_rows() -> None:
    text = rendered([row("slm", 0.002), row("semantic_cache", 0.0)])
    assert "shadow calls cost $0.002000" in text and "never served" not in text
    assert rendered([]) == ""
