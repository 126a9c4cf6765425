"""Degenerate-output rules of the SLM's confidence, and the SLM worker's gate using them."""

from __future__ import annotations

import pytest

from topics.codec import decode
from topics.schemas import Result, RouteRequest
from workers.slm.confidence import DEGENERATE_FACTOR, assess

from .test_workers import TOPICS, Gen, StubModel, request, slm

JAPANESE = "日本の首都はどこですか？一番大きな都市も教えてください。"
ENGLISH = "What is the capital of Japan, and which is its largest city?"
DASHES = "－" * 256  # what the SLM said to a Japanese question, with confidence 0.91
GSM8K = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May?")
SOLUTION = ("Natalia sold 48 clips in April.\nIn May she sold half as many: 48 / 2 = 24 clips.\n"
            "Altogether she sold 48 + 24 = 72 clips.\n72")
MMLU = ("Which of these numbers is prime?\nA. the number four\nB. the number seven, which is odd\nC. 9\n"
        "D. 10\nAnswer with the letter of the correct option only.")


@pytest.mark.parametrize("question", [JAPANESE, ENGLISH])
def test_a_long_run_of_fullwidth_dashes_is_degenerate_whatever_the_question(question: str) -> None:
    judged = assess(question, DASHES, raw_confidence=0.91, finish_reason="length", max_tokens=256)
    assert {"empty", "repetition"} <= set(judged.flags)
    assert judged.confidence < 0.4 * DEGENERATE_FACTOR
    assert "degenerate: repetition loop" in judged.reason and judged.raw == 0.91


def test_a_loop_cut_at_the_token_limit_is_a_repetition() -> None:
    loop = "To prove it, note that the root is rational. " * 12
    judged = assess("Prove that the square root of two is irrational.", loop[:400], raw_confidence=0.55,
                    finish_reason="length", max_tokens=256)
    assert judged.flags == ("repetition", "truncated")
    assert judged.confidence == pytest.approx(0.55 * DEGENERATE_FACTOR)


def test_loops_with_variations_and_repeated_lines_are_repetitions() -> None:
    # no exact period at the tail, but the same 4-grams over and over
    varied = " ".join(f"Step {i}: we add the apples to the basket and count again." for i in range(12))
    assert "repetition" in assess(GSM8K, varied + " So the answer is 12.", raw_confidence=0.6).flags
    lines = "\n".join(["The answer is the number of clips."] * 4 + ["72"])
    assert "repetition" in assess(GSM8K, lines, raw_confidence=0.6).flags


def test_empty_and_punctuation_only_answers() -> None:
    for answer in ("", "   \n ", "...", "－－ ！？"):
        assert "empty" in assess(ENGLISH, answer, raw_confidence=0.8).flags, answer
    assert "empty" not in assess(GSM8K, "72", raw_confidence=0.8).flags  # a bare number is an answer


def test_the_question_echoed_back() -> None:
    echoed = assess(GSM8K, GSM8K.split(". How")[0] + ".", raw_confidence=0.8)
    assert echoed.flags == ("echo",) and echoed.reason == "degenerate: question echoed"
    assert "echo" in assess(JAPANESE, JAPANESE, raw_confidence=0.8).flags  # CJK, judged per character
    # restating the question's opening and then solving it is no echo
    restated = "Natalia sold clips to 48 of her friends in April. " + SOLUTION
    assert "echo" not in assess(GSM8K, restated, raw_confidence=0.8).flags


def test_quoting_one_option_of_a_multiple_choice_question_is_no_echo() -> None:
    judged = assess(MMLU, "B. the number seven, which is odd", raw_confidence=0.7, finish_reason="length",
                    max_tokens=8)
    assert judged.flags == () and judged.confidence == 0.7  # a letter budget: running into it is normal


def test_an_answer_in_another_script_than_the_question() -> None:
    assert assess(JAPANESE, "The capital of Japan is Tokyo.", raw_confidence=0.9).flags == ("script",)
    assert assess(ENGLISH, "Столица Японии — Токио.", raw_confidence=0.9).flags == ("script",)
    assert assess(ENGLISH, "日本の首都は東京です。", raw_confidence=0.9).flags == ("script",)
    # the same script, mixed-in names or symbols, and answers too short to tell are fine
    mixed = "日本の首都は東京(Tokyo)です。最大の都市も東京です。"
    assert assess(JAPANESE, mixed, raw_confidence=0.9).flags == ()
    assert assess("Solve for α: 2α = 6", "α = 3, since 6 / 2 = 3.", raw_confidence=0.9).flags == ()
    assert assess(JAPANESE + "\nA. 東京\nB. 大阪", "A", raw_confidence=0.9).flags == ()
    assert assess(ENGLISH, "Ｔｏｋｙｏ is the capital.", raw_confidence=0.9).flags == ()  # fullwidth Latin


def test_good_answers_keep_their_confidence() -> None:
    judged = assess(GSM8K, SOLUTION, raw_confidence=0.62)
    assert judged.flags == () and judged.confidence == 0.62 and judged.reason == ""
    assert assess(MMLU, "B", raw_confidence=0.3).confidence == 0.3


def test_a_full_budget_answer_cut_at_its_limit_is_marked_truncated_not_degenerate() -> None:
    judged = assess(GSM8K, SOLUTION[:60], raw_confidence=0.5, finish_reason="length", max_tokens=256)
    assert judged.flags == ("truncated",) and not judged.degenerate
    assert judged.confidence == pytest.approx(0.5) and judged.reason == "truncated at the token limit"


def test_a_counting_loop_is_a_repetition_only_when_cut_at_the_limit() -> None:
    counting = "".join(f"Step {i}: Add the fraction to the decimal.\n" for i in range(1, 30))
    cut = assess(GSM8K, counting, raw_confidence=0.8, finish_reason="length")
    assert cut.flags == ("repetition", "truncated")
    # a finished answer may repeat its shape with other numbers honestly: the strict rules judge it
    assert assess(GSM8K, counting, raw_confidence=0.8, finish_reason="stop").flags == ()


class ScriptedModel(StubModel):
    """Says the given text with the given (raw) confidence, whatever it is asked."""

    def __init__(self, text: str, confidence: float, finish_reason: str = "length") -> None:
        super().__init__(confidence)
        self.text, self.finish_reason = text, finish_reason

    def generate(self, prompts, *, max_tokens, temperature=0.0, seed=None):
        self.calls.append(len(prompts))
        return [Gen(self.text, 3, 256, self.confidence, self.finish_reason) for _ in prompts]


def test_slm_worker_escalates_a_confident_degenerate_answer_and_says_why() -> None:
    out = slm(ScriptedModel(DASHES, 0.91), escalate_below=0.4)([request("1", JAPANESE)])
    assert [o.topic for o in out] == [TOPICS.route_llm]
    reason = decode(out[0].value, RouteRequest).escalation or ""
    assert reason.startswith("low confidence 0.01 < 0.40") and "degenerate: repetition loop" in reason
    assert "raw 0.91" in reason
    # a good answer at a lower raw confidence is answered, with that confidence
    out = slm(ScriptedModel(SOLUTION, 0.7, "stop"), escalate_below=0.4)([request("2", GSM8K)])
    assert out[0].topic == TOPICS.results and decode(out[0].value, Result).confidence == pytest.approx(0.7)


def test_slm_worker_escalates_an_answer_in_another_script() -> None:
    model = ScriptedModel("The capital is Tokyo, the largest city too.", 0.8, "stop")
    out = slm(model)([request("1", JAPANESE)])
    reason = decode(out[0].value, RouteRequest).escalation or ""
    assert "degenerate: other script than the question" in reason
