import numpy as np
import pytest

from pipeline.eval.datasets import Prompt
from pipeline.eval.router_eval import cost_cut_interval, curve, summarise
from pipeline.routing.features import BASE_NAMES, NAMES, multiple_choice, text_features
from pipeline.routing.scorer import MODEL_FILE, DifficultyScorer, GatedModel, LogisticModel, load_model
from pipeline.routing.train import gsm8k_split, held_out, train
from pipeline.semantic.embedders import HashingEmbedder, StaticEmbedder

MC = "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
WORD = "Tom has 3 apples. He buys 5 more each day for 4 days, then gives half away. How many are left?"


def head(bias: float, features: int, dim: int = 8) -> LogisticModel:
    return LogisticModel(np.zeros(dim + features, np.float32), bias, np.zeros(features, np.float32),
                         np.ones(features, np.float32), np.linspace(0, 1, 101).astype(np.float32), "hashing")


def test_multiple_choice_gate() -> None:
    assert multiple_choice(MC) and not multiple_choice(WORD) and not multiple_choice("A. one option")


def test_math_features_count_steps() -> None:
    easy, hard = text_features("Tom has 3 apples."), text_features(WORD)
    assert len(hard) == len(NAMES) and len(text_features(WORD, len(BASE_NAMES))) == len(BASE_NAMES)
    for name in ("log_distinct_numbers", "log_sentences", "log_quantity_words", "word_fraction"):
        i = NAMES.index(name)
        assert hard[i] > easy[i], name
    assert np.isfinite(text_features("1.2.3 and 99999999999999999999 / 0")).all()


def test_gated_model_sends_each_prompt_to_its_head(tmp_path) -> None:
    model = GatedModel(head(-2.0, len(BASE_NAMES)), head(2.0, len(NAMES)), np.linspace(0, 1, 101))
    scores = DifficultyScorer(HashingEmbedder(dim=8), model).score([MC, WORD, MC])
    assert scores[0] == scores[2] < 0.2 and scores[1] > 0.8
    model.save(tmp_path / "g.npz")
    again = load_model(tmp_path / "g.npz")
    assert isinstance(again, GatedModel) and again.open.bias == pytest.approx(2.0)
    assert len(again.choice.feat_mean) == len(BASE_NAMES)


def test_split_and_training_need_both_formats() -> None:
    texts = [f"question {i}" for i in range(2000)]
    assert 0.45 < np.mean([gsm8k_split(t) == "train" for t in texts]) < 0.55
    p = Prompt(WORD, 0.0, 1.0, "gsm8k", "gsm8k")
    assert held_out(p) == (gsm8k_split(WORD) == "test")
    assert held_out(Prompt("hi", 1.0, 1.0, "mt_bench", "mt_bench"))
    with pytest.raises(ValueError, match="both"):
        train([p, p], HashingEmbedder(dim=8))


def test_shipped_model_is_gated_and_scores_word_problems() -> None:
    model = load_model(MODEL_FILE)
    assert isinstance(model, GatedModel) and model.embedder == "static"
    easy = "Tom has 3 apples and eats 1. How many are left?"
    scores = DifficultyScorer(StaticEmbedder(), model).score([easy, WORD, MC])
    assert ((scores > 0) & (scores < 1)).all() and scores[1] > scores[0]


def test_cost_cut_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    weak = (rng.random(400) < 0.6).astype(float)
    strong = np.maximum(weak, rng.random(400) < 0.5)
    scores = strong - weak + rng.normal(0, 0.5, 400)
    low, high = cost_cut_interval(scores, weak, strong, rounds=200)
    point = summarise(curve(scores, weak, strong), weak, strong)["cost_cut_at_95"]
    assert low <= point <= high and high - low < 0.5
