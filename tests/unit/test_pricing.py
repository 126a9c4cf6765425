import pytest

from workers.pricing import FALLBACK_PRICE, PriceTable


def test_dated_model_names_use_the_longest_known_prefix() -> None:
    table = PriceTable()
    assert table.price("gpt-4o-mini-2024-07-18") == table.prices["gpt-4o-mini"]
    assert table.price("gpt-4o-2024-08-06") == table.prices["gpt-4o"]


def test_unknown_upstream_name_falls_back_to_the_configured_model_then_default() -> None:
    table = PriceTable()
    assert table.price("standin-x", configured="gpt-4o-mini") == table.prices["gpt-4o-mini"]
    assert table.price("mystery") == FALLBACK_PRICE


def test_costs() -> None:
    table = PriceTable(prices={"m": (1.0, 2.0)}, cpu_hour_usd=3.6)
    assert table.llm_cost("m", 1_000_000, 500_000) == pytest.approx(2.0)
    assert table.cpu_cost(seconds=10, threads=2) == pytest.approx(0.02)


def test_the_strong_model_of_the_labels_has_its_list_price() -> None:
    from workers.pricing import PriceTable

    assert PriceTable().price("standin-answer-book", configured="gpt-4-1106-preview") == (10.00, 30.00)
