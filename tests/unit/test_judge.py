"""The shadow judge (pipeline/eval/judge.py): exact where exact means something, embeddings for
free text, and an LLM rubric reply read robustly."""

import pytest

from pipeline.eval.judge import (
    AnswerJudge,
    embedding_verdict,
    exact_verdict,
    parse_rubric_score,
    rubric_messages,
)
from pipeline.semantic.embedders import StaticEmbedder

MCQ = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer with the letter."


@pytest.mark.parametrize(("served", "shadow", "score"), [
    ("B", "B", 1.0),
    ("B.", "The answer is B", 1.0),
    ("(B) Jupiter", "B", 1.0),
    ("B", "C", 0.0),
    ("Jupiter is the largest planet by far, bigger than all others together", "B", 0.0),  # no letter
])
def test_letters_are_judged_by_the_letter_given(served: str, shadow: str, score: float) -> None:
    verdict = exact_verdict(MCQ, served, shadow)
    assert verdict is not None and (verdict.judge, verdict.score) == ("exact", score)


def test_bare_letters_are_compared_without_the_question() -> None:
    assert exact_verdict("which one?", "C", "D)").score == 0.0  # type: ignore[union-attr]
    assert exact_verdict("which one?", "C", "(C)").score == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(("served", "shadow", "score"), [
    ("42", "42.0", 1.0),
    ("She pays 3 * 4 = 12 dollars.\nThen 12 + 6 = 18.\n#### 18", "The answer is 18", 1.0),
    ("Step 1: 5 apples plus 7 apples.\nStep 2: that makes twelve in all.\nAnswer: 12", "12", 1.0),
    ("1,200", "1200", 1.0),
    ("Total: 17", "Total: 71", 0.0),
])
def test_numbers_are_judged_by_the_final_number(served: str, shadow: str, score: float) -> None:
    verdict = exact_verdict("How much is it?", served, shadow)
    assert verdict is not None and verdict.judge == "exact" and verdict.score == score


@pytest.mark.parametrize(("served", "shadow", "score"), [
    ("Paris", "paris.", 1.0),
    ("Paris", "The capital of France is Paris", 1.0),
    ("Paris", "It is not Paris", 0.0),  # a negation the other lacks is a contradiction
    ("yes", "no", 0.0),
    ("Lyon", "Paris", 0.0),
])
def test_short_answers_are_judged_by_their_words(served: str, shadow: str, score: float) -> None:
    verdict = exact_verdict("What is the capital of France?", served, shadow)
    assert verdict is not None and verdict.score == score


def test_an_empty_answer_agrees_only_with_an_empty_one() -> None:
    assert exact_verdict("q", "", "Paris").score == 0.0  # type: ignore[union-attr]
    assert exact_verdict("q", "  ", "").score == 1.0  # type: ignore[union-attr]


def test_free_text_has_no_exact_verdict_and_embeddings_rank_agreement() -> None:
    question = "Why is the sky blue?"
    same_a = ("The sky looks blue because air molecules scatter short blue wavelengths of "
              "sunlight much more strongly than the longer red ones, an effect called Rayleigh scattering.")
    same_b = ("Sunlight is scattered by the molecules in the atmosphere, and blue light, having a "
              "shorter wavelength, is scattered far more than red: this Rayleigh scattering makes "
              "the sky blue.")
    other = ("To bake sourdough bread you feed the starter the night before, mix flour and water, "
             "fold the dough every half hour and bake it in a very hot covered pot.")
    assert exact_verdict(question, same_a, same_b) is None
    embedder = StaticEmbedder()
    close = embedding_verdict(embedder, same_a, same_b)
    far = embedding_verdict(embedder, same_a, other)
    assert close.judge == "embedding:static" and 0.0 <= far.score < close.score <= 1.0
    assert close.score > 0.7 and far.score < 0.5


@pytest.mark.parametrize(("reply", "score"), [
    ("0.8", 0.8), ("Score: 1", 1.0), (".25", 0.25), ("80%", 0.8), ("4/5", 0.8), ("8", 0.8),
    ("0", 0.0), ("I would give it 0.6 because ...", 0.6), ("10/10", 1.0),
])
def test_rubric_replies_are_parsed_robustly(reply: str, score: float) -> None:
    assert parse_rubric_score(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", ["", "they agree", "score: 250", "-3", "1/0", "7/3"])
def test_a_rubric_reply_without_a_score_in_range_is_none(reply: str) -> None:
    assert parse_rubric_score(reply) is None


def test_rubric_prompt_names_reference_and_candidate_and_stays_small() -> None:
    messages = rubric_messages("Q?", "served " * 5000, "llm answer")
    assert messages[0]["role"] == "system" and "0 and 1" in messages[0]["content"]
    user = messages[1]["content"]
    assert user.index("Reference answer:\nllm answer") < user.index("Candidate answer:\nserved")
    assert len(user) < 13_000  # the served text was cut


def test_answer_judge_refuses_an_unknown_mode() -> None:
    assert AnswerJudge("llm").uses_llm and not AnswerJudge().uses_llm
    with pytest.raises(ValueError, match="unknown judge mode"):
        AnswerJudge("vibes")
