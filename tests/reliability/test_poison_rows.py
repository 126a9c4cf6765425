"""Fault suite: poison rows on the results topic. Results that ClickHouse (or its client) refuses,
or that cannot be made into a row, sent straight to a running sink ahead of good ones: every good
result lands, each poison one is a dead letter with the error as its reason, nothing is lost and
nothing is stuck behind them."""

from __future__ import annotations

import time

import pytest

from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.reliability.conftest import outcome
from topics.codec import encode
from topics.schemas import Result

pytestmark = pytest.mark.integration

MONTH_S = 31 * 86_400
JAN_2016 = 1_451_606_400.0


def _result(qid: str, **fields: object) -> bytes:
    now = time.time()
    base: dict[str, object] = dict(query_id=qid, tenant="acme", route="llm", model="m",
                                   answer=f"answer {qid}", fingerprint=f"fp-{qid}",
                                   submitted_at=now, completed_at=now, prompt_tokens=3)
    return encode(Result(**{**base, **fields}))  # type: ignore[arg-type]


def test_poison_rows_never_hold_the_good_ones(pipeline: Pipeline, broker: str) -> None:
    poison = {
        "neg-tokens": _result("neg-tokens", prompt_tokens=-5),
        "huge-tokens": _result("huge-tokens", completion_tokens=2 ** 32),
        "far-future": _result("far-future", submitted_at=1e20),
        "far-past": _result("far-past", completed_at=-1e19),
    }
    # a backfill: 130 months of history from 2016, one insert block would span 130 partitions
    history = {f"h{i:03}": _result(f"h{i:03}", submitted_at=JAN_2016 + i * MONTH_S,
                                   completed_at=JAN_2016 + i * MONTH_S + 1) for i in range(130)}
    live = {f"g{i:03}": _result(f"g{i:03}") for i in range(200)}
    pipeline.start("sink")
    # the poison goes first, so on a sink that retries a refused batch nothing after it lands
    send(pipeline, broker, list(poison.values()), topic=pipeline.topics.results)
    send(pipeline, broker, list(history.values()) + list(live.values()),
         topic=pipeline.topics.results)
    valid = set(history) | set(live)
    assert pipeline.wait_until(RESULTS, len(valid), timeout=180) == len(valid)
    assert pipeline.wait_until(LETTERS, len(poison), timeout=60) == len(poison)

    reasons = dict(pipeline.reader().query(
        "SELECT query_id, reason FROM pointsman.dead_letters FINAL")[1])
    assert set(reasons) == set(poison)
    assert "prompt_tokens" in reasons["neg-tokens"] and "out of range" in reasons["neg-tokens"]
    assert "completion_tokens" in reasons["huge-tokens"]
    assert all(reasons[q].startswith("sink: cannot make a row") for q in poison)
    # history keeps its answers and its true submission time
    old = pipeline.reader().query("SELECT answer, toString(submitted_at) FROM pointsman.results "
                                  "FINAL WHERE query_id = 'h000'")[1]
    assert [tuple(row) for row in old] == [("answer h000", "2016-01-01 00:00:00.000")]

    record = outcome(pipeline, "poison result rows (bad tokens, year 1e20, 130 months)",
                     sent=len(poison) + len(valid), valid=valid, malformed=len(poison))
    assert record["lost"] == 0 and record["unexpected"] == 0, record
    assert record["duplicated_rows_after_dedup"] == 0, record
    # the sink's letters for refused rows keep the query id, so they count as failure letters
    assert record["dead_lettered"] + record["failure_letters"] == record["malformed"], record
