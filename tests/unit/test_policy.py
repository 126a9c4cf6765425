import pytest

from pipeline.policy import BaselineLengthPolicy, make_policy
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
