import numpy as np

from pipeline.eval.router_eval import curve, summarise
from pipeline.routing.scorer import MODEL_FILE, DifficultyScorer, GatedModel, fit_logistic, load_model
from pipeline.semantic.embedders import StaticEmbedder


def test_fit_logistic_learns_a_separable_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(float)
    w, b = fit_logistic(x, y, l2=0.1)
    assert w[0] > 1 and w[2] < -1 and abs(w[1]) < 0.5
    assert ((x @ w + b > 0) == (y > 0)).mean() > 0.97


def test_shipped_model_loads_scores_and_calibrates(tmp_path) -> None:
    model = load_model(MODEL_FILE)
    assert isinstance(model, GatedModel)
    scorer = DifficultyScorer(StaticEmbedder(), model)
    scores = scorer.score(["hi", "Prove that there are infinitely many primes."])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    assert scorer.threshold_for_share(0.5) <= scorer.threshold_for_share(0.8)
    model.choice.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    assert not isinstance(again, GatedModel)
    assert np.allclose(again.weights, model.choice.weights) and again.embedder == "static"


def test_quality_cost_curve() -> None:
    weak = np.array([1.0, 0.0, 1.0, 0.0])
    strong = np.array([1.0, 1.0, 1.0, 1.0])
    oracle = curve(strong - weak, weak, strong, steps=5)
    assert list(oracle) == [0.5, 0.75, 1.0, 1.0, 1.0]
    s = summarise(oracle, weak, strong)
    assert s["cost_cut_at_95"] == 0.5 and s["cpt50"] == 0.25
