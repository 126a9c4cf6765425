"""The sink's batch mechanics kept fast: no garbage collection while a batch is built, and an
Origin made only for a row that cannot be stored."""

from __future__ import annotations

import gc

import pytest

from pipeline.sink import Origin, Row, by_partition, gc_paused
from tests.unit.test_sink import Message


def test_collection_is_paused_inside_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("a batch that fails")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_row_knows_its_origin_from_its_message() -> None:
    row = Row(["v"], 202601, Message("s.results", b"{raw}", 9), "q1", "acme")  # type: ignore[arg-type]
    assert row.origin == Origin("s.results", 2, 9, b"{raw}", None, 1_700_000_000_000, "q1", "acme")
    made = Origin("s.results", 1, 2, None, None, None)
    assert Row([], 0, made).origin is made


def test_a_batch_within_the_partition_limit_is_one_chunk_in_arrival_order() -> None:
    # the usual batch (a few months) goes in one insert as it came, with no regrouping row by row
    rows = [202601, 202512, 202601, 202511, 202512] * 200
    assert by_partition(rows, lambda month: month, 50) == [rows]
    assert by_partition(rows, lambda month: month, 2) == [[202511] * 200 + [202512] * 400,
                                                         [202601] * 400]
