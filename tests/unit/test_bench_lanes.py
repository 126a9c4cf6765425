"""`pointsman bench lanes`: its percentile and its command line (the run itself is in BENCHMARKS.md)."""

from __future__ import annotations

from pipeline.bench_lanes import percentile
from pipeline.cli import _parser


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_bench_lanes_takes_its_options() -> None:
    args = _parser().parse_args(["bench", "lanes", "--backfill", "500", "--live", "20",
                                 "--rate", "4", "--latency-ms", "300", "--track", "both", "--json"])
    assert (args.what, args.backfill, args.live, args.rate, args.latency_ms, args.track, args.json) == (
        "lanes", 500, 20, 4.0, 300.0, "both", True)
