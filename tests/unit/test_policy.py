import pytest

from pipeline.policy import BaselineLengthPolicy, PolicyOptions, make_policy
from topics.schemas import Query


def test_baseline_sends_short_to_slm_and_long_or_big_answers_to_llm() -> None:
    policy = BaselineLengthPolicy(max_prompt_chars=20, max_answer_tokens=50)
    assert policy.decide(Query(text="short", max_tokens=50)).track == "slm"
    assert policy.decide(Query(text="x" * 21, max_tokens=50)).track == "llm"
    assert policy.decide(Query(text="short", max_tokens=51)).track == "llm"
    assert "baseline-length" in policy.decide(Query(text="short", max_tokens=50)).reason


def test_registry() -> None:
    assert make_policy("always-llm").decide(Query(text="hi")).track == "llm"
    assert make_policy("always-slm").decide(Query(text="x" * 10_000)).track == "slm"
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("nope")


def test_the_baseline_scores_the_nearer_limit_as_a_share_of_it_against_1() -> None:
    policy = BaselineLengthPolicy(max_prompt_chars=20, max_answer_tokens=50)
    short = policy.decide(Query(text="x" * 10, max_tokens=25))
    assert (short.track, short.policy, short.score, short.threshold) == ("slm", "baseline-length", 0.5, 1.0)
    big = policy.decide(Query(text="short", max_tokens=100))
    assert (big.track, big.score, big.threshold) == ("llm", 2.0, 1.0)  # the answer budget, twice over
    fixed = make_policy("always-llm").decide(Query(text="hi"))
    assert (fixed.policy, fixed.score, fixed.threshold) == ("always-llm", None, None)
    forced = make_policy("baseline-length", PolicyOptions(tenant_routes="vip=llm")).decide(
        Query(tenant="vip", text="hi"))
    assert (forced.track, forced.policy, forced.score) == ("llm", "tenant-forced", None)
