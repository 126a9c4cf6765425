from pipeline.eval.cache_eval import _groups, live, sweep
from pipeline.eval.datasets import Pair, fow_half
from pipeline.semantic.cache import SemanticSettings
from pipeline.semantic.embedders import HashingEmbedder

PAIRS = [
    Pair("How do I reset my password?", "how do i reset my password", True, "near_repeat", "t"),
    Pair("How do I reset my password?", "How do I reset my colleague's password?", False, "scope", "t"),
    Pair("Is the clinic open on Sundays?", "Is the clinic open on Saturdays?", False, "number_date", "t"),
    Pair("What are your opening hours?", "what are your opening hours please", True, "near_repeat", "t"),
]


def test_groups_join_same_answer_texts() -> None:
    root = _groups(PAIRS)
    assert root("How do I reset my password?") == root("how do i reset my password")
    assert root("How do I reset my password?") != root("How do I reset my colleague's password?")


def test_live_modes_and_sweep() -> None:
    settings = SemanticSettings(threshold=0.6)
    fast = HashingEmbedder()
    pairwise = live(PAIRS, fast, None, settings, "pairwise")
    assert pairwise["precision"] == 1.0 and pairwise["hit_rate"] == 1.0
    assert live(PAIRS, fast, None, settings, "cross-tenant")["hits"] == 0
    shared = live(PAIRS, fast, None, settings, "shared")
    assert shared["false_hits"] == 0
    rows = sweep(PAIRS, fast, None, settings)
    assert rows[0]["static_guarded"]["false_hits"] == 0 and "minilm_raw" not in rows[0]


def test_fow_half_is_a_stable_split_of_the_cached_question() -> None:
    halves = {fow_half(p) for p in PAIRS}
    assert halves <= {"even", "odd"}
    assert fow_half(PAIRS[0]) == fow_half(PAIRS[1])  # one cached question, one half
    assert fow_half(Pair("x", "y", True, "c", "t")) == fow_half(Pair("x", "z", False, "d", "t"))
