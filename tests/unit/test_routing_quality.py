"""Quality-target calibration and the grounded router's training on labelled outcomes."""

import numpy as np
import pytest

from pipeline.routing.grounded import Outcome, fit_outcomes, folds_of, oof_cost_cuts
from pipeline.routing.policy import LearnedPolicy
from pipeline.routing.quality import QualityCurve
from pipeline.routing.scorer import DifficultyScorer, load_model
from pipeline.semantic.embedders import StaticEmbedder
from topics.schemas import Query


def test_curve_quality_matches_routing_by_hand():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    slm = np.array([1, 0, 1, 0])
    strong = np.array([1, 1, 1, 0])
    curve = QualityCurve.fit(scores, slm, strong, grid=5)
    # k lowest to the SLM: k=0 -> 3/4; k=1 -> 3/4; k=2 -> 2/4; k=3 -> 2/4; k=4 -> 2/4
    assert np.allclose(curve.quality_ratio, [1, 1, 2 / 3, 2 / 3, 2 / 3])
    assert np.allclose(curve.slm_share, [0, 0.25, 0.5, 0.75, 1])
    threshold, share, ratio = curve.point_for(0.95)
    assert share == 0.25 and ratio == 1.0
    assert 0.1 < threshold < 0.2  # exactly the lowest-scored prompt falls below it
    threshold, share, _ = curve.point_for(0.6)
    assert share == 1.0 and threshold == np.inf


def test_unreachable_target_sends_everything_to_the_llm():
    curve = QualityCurve.fit(np.array([0.5, 0.6]), np.array([0, 0]), np.array([1, 1]), grid=3)
    threshold, share, _ = curve.point_for(0.99)
    assert share == 0.0 and threshold < 0.5


def _outcomes() -> list[Outcome]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(240):
        hard = i % 3 == 0
        options = "\nA. one\nB. two\nC. three\nD. four\nAnswer with the letter of the correct option only."
        text = f"Prove the integral of x^{i} step by step" if hard else f"What colour is item {i}?"
        if i % 2:
            text += options
        out.append(Outcome(text, float(not hard and rng.random() < 0.9), float(rng.random() < 0.95),
                           f"group{i % 7}"))
    return out


def test_grounded_router_learns_where_the_slm_fails_and_meets_its_target_out_of_fold():
    outcomes = _outcomes()
    model, oof = fit_outcomes(outcomes, StaticEmbedder())
    hard = np.array([o.slm_ok == 0 and o.strong_ok == 1 for o in outcomes])
    assert oof[hard].mean() > oof[~hard].mean() + 0.2
    assert set(model.curves) == {"choice", "open"}
    for curve in model.curves.values():
        _, share, ratio = curve.point_for(0.95)
        assert ratio >= 0.95 and share > 0.3  # easy prompts (2/3 of them) can go to the SLM


def test_out_of_fold_cost_cut_reaches_the_oracles_only_with_a_perfect_ranking():
    outcomes = _outcomes()
    model, _ = fit_outcomes(outcomes, StaticEmbedder())
    loss = np.array([o.strong_ok - o.slm_ok for o in outcomes])  # what routing a prompt to the SLM costs
    perfect = oof_cost_cuts(model, loss, outcomes)
    reversed_ = oof_cost_cuts(model, -loss, outcomes)
    assert set(perfect) == {"choice", "open"}
    for head, (ours, oracle) in perfect.items():
        assert 0.3 < oracle <= 1.0
        # ranked by the true loss the router misses only the oracle's length-aware give-ups
        assert ours > 0.8 * oracle, head
        assert reversed_[head][0] < 0.2 * oracle, head  # ranked backwards it keeps little
        assert reversed_[head][1] == oracle  # the oracle does not depend on the scores


def test_folds_keep_a_group_together_and_split_a_single_set_by_prompt():
    outcomes = _outcomes()
    folds = folds_of(outcomes)
    for group in {o.group for o in outcomes}:
        assert len({f for o, f in zip(outcomes, folds, strict=True) if o.group == group}) == 1
    single = [Outcome(f"q{i}", 1, 1, "gsm8k") for i in range(50)]
    assert len(set(folds_of(single))) == 5


def test_quality_target_policy_uses_each_heads_threshold_and_reloads_a_retrained_file(tmp_path):
    model, _ = fit_outcomes(_outcomes(), StaticEmbedder())
    path = tmp_path / "router.npz"
    model.save(path)
    loaded = load_model(path)
    assert set(loaded.curves) == {"choice", "open"}
    scorer = DifficultyScorer(StaticEmbedder(), loaded)
    policy = LearnedPolicy(scorer, quality_target=0.95, model_path=path, reload_every_s=0.0)
    expected = scorer.quality_thresholds(0.95)
    decision = policy.decide(Query(text="What colour is item 3?"))
    assert f"threshold {expected['open']:.3f}" in decision.reason and "quality target 0.95" in decision.reason
    # a retrained file (here: every prompt must go to the LLM) is picked up without a restart
    strict = QualityCurve(np.array([-1.0]), np.array([0.0]), np.array([1.0]))
    type(loaded)(loaded.choice, loaded.open, loaded.quantiles, {"choice": strict, "open": strict}).save(path)
    import os

    os.utime(path, (1, 1))
    assert policy.decide(Query(text="What colour is item 3?")).track == "llm"


def test_a_model_without_curves_refuses_a_quality_target(tmp_path):
    model, _ = fit_outcomes(_outcomes(), StaticEmbedder())
    bare = type(model)(model.choice, model.open, model.quantiles)
    with pytest.raises(ValueError, match="no quality curves"):
        LearnedPolicy(DifficultyScorer(StaticEmbedder(), bare), quality_target=0.95)
