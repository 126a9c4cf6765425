"""`pointsman bench sink`: the shape of its generated results, and its command line (the run
itself is in BENCHMARKS.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.bench_sink import result_messages
from pipeline.cli import _parser
from pipeline.sink import RESULT_COLUMNS, result_row
from topics.codec import decode, encode
from topics.schemas import Result

NOW = 1_790_000_000.0  # 2026-09-21


def test_generated_results_look_like_real_traffic() -> None:
    results = result_messages(2000, now=NOW)
    assert len({r.query_id for r in results}) == 2000
    assert all(200 <= len(r.answer) <= 500 for r in results)
    assert len({r.tenant for r in results}) >= 4 and len({r.route for r in results}) >= 5
    assert {r.lane for r in results} == {"live", "backfill"}
    assert all(r.query is not None and (r.query.text or r.query.messages) and r.query.metadata
               for r in results)
    assert any(r.query and r.query.messages for r in results)
    months = {datetime.fromtimestamp(r.submitted_at, tz=UTC).strftime("%Y%m") for r in results}
    assert len(months) >= 3  # a few monthly partitions, as history has
    assert all(NOW - 91 * 86_400 <= r.submitted_at <= NOW <= r.completed_at + 91 * 86_400
               for r in results)
    assert all(r.completed_at >= r.submitted_at for r in results)
    # each survives the wire and makes a whole row
    sample = decode(encode(results[7]), Result)
    assert sample == results[7]
    assert len(result_row(sample)) == len(RESULT_COLUMNS)


def test_generated_results_are_reproducible() -> None:
    assert result_messages(50, now=NOW) == result_messages(50, now=NOW)
    assert result_messages(50, now=NOW) != result_messages(50, now=NOW, seed=1)


def test_bench_sink_takes_its_options() -> None:
    args = _parser().parse_args(["bench", "sink", "--rows", "5000", "--json"])
    assert (args.what, args.rows, args.json) == ("sink", 5000, True)
