"""Property tests: no input crashes validation or the router; each gets exactly one outcome."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.decide import Incoming, RouterCore
from pipeline.exact_cache import ExactCache
from pipeline.policy import make_policy
from pipeline.validate import validate
from tests.fuzz_strategies import MALFORMED_KINDS, json_values, malformed, valid_query
from topics.errors import InvalidMessage
from topics.names import Topics

TOPICS = Topics("fz.")
CORE = RouterCore(TOPICS, make_policy("baseline-length"), ExactCache())


def route(raw: bytes) -> str:
    return CORE.route_one(Incoming(TOPICS.queries, 0, 1, 0.0, None, raw), 0.0).topic


@settings(max_examples=300)
@given(st.binary(max_size=300) | json_values.map(lambda v: repr(v).encode()))
def test_any_bytes_give_a_query_or_a_reason(raw: bytes) -> None:
    try:
        validate(raw, origin="o", timestamp=0.0)
    except InvalidMessage as exc:
        assert exc.reason
    assert route(raw) in (TOPICS.deadletter, TOPICS.route_slm, TOPICS.route_llm)


@settings(max_examples=200)
@given(malformed)
def test_every_malformed_kind_is_dead_lettered(raw: bytes) -> None:
    assert route(raw) == TOPICS.deadletter


@settings(max_examples=200)
@given(valid_query())
def test_valid_queries_are_routed(raw: bytes) -> None:
    assert route(raw) in (TOPICS.route_slm, TOPICS.route_llm)


def test_every_kind_is_covered() -> None:
    assert set(MALFORMED_KINDS) == {"not JSON", "not an object", "missing text", "wrong types",
                                    "empty text", "bad tenant", "bad utf-8", "too deep",
                                    "duplicate key", "bad submitted_at", "oversized"}


@settings(max_examples=50)
@given(st.sampled_from(sorted(MALFORMED_KINDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), MALFORMED_KINDS[kind])))
def test_each_new_kind_is_dead_lettered_for_its_own_reason(case: tuple[str, bytes]) -> None:
    kind, raw = case
    reason = {"too deep": "nested too deeply", "duplicate key": "duplicate key",
              "bad submitted_at": "submitted_at", "oversized": "query too large"}.get(kind)
    if reason is None:
        return  # the older kinds share reasons; test_every_malformed_kind_is_dead_lettered covers them
    with pytest.raises(InvalidMessage) as caught:
        validate(raw, origin="o", timestamp=time.time(), now=time.time())
    assert reason in caught.value.reason
