from collections import Counter

import numpy as np
import pytest

from pipeline.policy import FixedPolicy
from pipeline.routing.features import NAMES, text_features
from pipeline.routing.policy import (
    ABSplit,
    LearnedPolicy,
    ShareCalibrator,
    TenantOverride,
    arm_of,
    threshold_for_share,
)
from pipeline.routing.scorer import DifficultyScorer, LogisticModel
from pipeline.semantic.embedders import HashingEmbedder
from topics.schemas import Query


def length_scorer() -> DifficultyScorer:
    """A hand-made model over the hashing embedder: the score grows with the prompt's length."""
    dim = 16
    weights = np.zeros(dim + len(NAMES), np.float32)
    weights[dim] = 4.0  # log_chars, standardised
    model = LogisticModel(weights, 0.0, np.full(len(NAMES), 4.0, np.float32), np.ones(len(NAMES), np.float32),
                          np.linspace(0.0, 1.0, 101).astype(np.float32), "hashing")
    return DifficultyScorer(HashingEmbedder(dim=dim), model)


def test_threshold_for_share_splits_scores() -> None:
    scores = np.linspace(0, 1, 1001)
    t = threshold_for_share(scores, 0.8)
    assert abs((scores < t).mean() - 0.8) < 0.01
    assert threshold_for_share(scores, 1.0) == float("inf")
    with pytest.raises(ValueError):
        threshold_for_share(scores, 1.5)


def test_calibrator_follows_traffic() -> None:
    cal = ShareCalibrator(0.8, initial=0.5, window=1000, every=100)
    rng = np.random.default_rng(0)
    for s in rng.uniform(0.6, 1.0, 1000):
        cal.observe(float(s))
    assert 0.9 < cal.threshold < 0.94  # 80% of U(0.6, 1.0) lies below 0.92


def test_learned_policy_routes_by_score_and_says_why() -> None:
    policy = LearnedPolicy(length_scorer(), slm_share=0.8, threshold=0.5)
    short = policy.decide(Query(text="hi there"))
    long = policy.decide(Query(text="explain " * 200))
    assert short.track == "slm" and long.track == "llm"
    assert "learned: score" in long.reason and "threshold 0.500" in long.reason
    assert LearnedPolicy(length_scorer(), slm_share=0.3).threshold == pytest.approx(0.3)


def test_tenant_overrides() -> None:
    policy = LearnedPolicy(length_scorer(), threshold=0.5, overrides={
        "vip": TenantOverride(track="llm"), "cheap": TenantOverride(threshold=0.9999)})
    assert policy.decide(Query(tenant="vip", text="hi")).track == "llm"
    assert "forced" in policy.decide(Query(tenant="vip", text="hi")).reason
    medium = Query(tenant="cheap", text="explain " * 10)
    assert policy.decide(medium.__class__(text=medium.text)).track == "llm"
    cheap = policy.decide(medium)
    assert cheap.track == "slm" and "tenant cheap threshold" in cheap.reason


def test_ab_split_is_sticky_and_weighted() -> None:
    split = ABSplit((("control", 0.5, FixedPolicy("slm")), ("treat", 0.5, FixedPolicy("llm"))), salt="exp1")
    q = Query(tenant="acme", text="x", metadata={"user": "u42"})
    assert len({split.decide(q).reason for _ in range(10)}) == 1
    assert split.decide(q).reason.startswith("ab[exp1:")
    arms = Counter(arm_of(f"user{i}", [0.9, 0.1], "s") for i in range(10_000))
    assert 0.88 < arms[0] / 10_000 < 0.92


def test_features_are_finite() -> None:
    f = text_features("Solve 2x + 3 = 7.\nA. 1\nB. 2\nC. 3\nD. 4")
    assert f.shape == (len(NAMES),) and np.isfinite(f).all() and f[NAMES.index("choices")] > 0.5
    assert np.isfinite(text_features("")).all()


def test_parse_overrides() -> None:
    from pipeline.routing.policy import parse_overrides
    from pipeline.semantic.cache import parse_thresholds

    assert parse_overrides("vip=llm, cheap=0.9") == {"vip": TenantOverride(track="llm"),
                                                     "cheap": TenantOverride(threshold=0.9)}
    assert parse_overrides("") == {}
    with pytest.raises(ValueError, match="TENANT="):
        parse_overrides("x=maybe")
    assert parse_thresholds("acme=0.9,globex=0.95") == {"acme": 0.9, "globex": 0.95}


def test_the_decision_names_its_policy_score_and_threshold_as_columns_do() -> None:
    policy = LearnedPolicy(length_scorer(), threshold=0.5, overrides={
        "vip": TenantOverride(track="llm"), "cheap": TenantOverride(threshold=0.9999)})
    long = policy.decide(Query(text="explain " * 200))
    assert (long.policy, long.threshold) == ("learned", 0.5) and long.score is not None
    assert long.score >= 0.5 and f"score {long.score:.3f}" in long.reason  # the same figures
    cheap = policy.decide(Query(tenant="cheap", text="explain " * 10))
    assert cheap.threshold == 0.9999 and cheap.score is not None and cheap.score < 0.9999
    forced = policy.decide(Query(tenant="vip", text="hi"))
    assert (forced.policy, forced.score, forced.threshold) == ("tenant-forced", None, None)


def test_an_ab_arm_is_in_the_policy_column_and_keeps_the_arms_escalation_rule() -> None:
    from pipeline.policy import TenantForced

    forced = TenantForced(FixedPolicy("llm"), {"acme": "slm"})
    split = ABSplit((("control", 0.5, forced), ("treat", 0.5, forced)), salt="exp1")
    decision = split.decide(Query(tenant="acme", text="x", metadata={"user": "u42"}))
    assert decision.policy in ("ab[exp1]:control", "ab[exp1]:treat")
    assert decision.track == "slm" and decision.escalate is False  # forced to the SLM: its own answers
