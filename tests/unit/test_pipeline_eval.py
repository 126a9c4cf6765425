"""`pointsman eval pipeline`'s pure parts: the answer book, the sample, the oracle and the summary."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.config import Config
from pipeline.eval.labelled import LabelledPrompt, is_correct
from pipeline.eval.pipeline_eval import EvalRun, book_for, child_env, queries, tenants
from pipeline.eval.pipeline_score import Answered, Outcome, curve, oracle_cost, sample, summary
from pipeline.policy import BaselineLengthPolicy, PolicyOptions, TenantForced, make_policy
from topics.schemas import Query
from workers.answer_book import UNKNOWN_REPLY, AnswerBook, BookEntry, reply
from workers.llm_standin import StandinLLM


def mc(question: str, answer: str = "B", strong: bool | None = True, group: str = "g") -> LabelledPrompt:
    return LabelledPrompt(question, ("one", "two", "three", "four"), answer, strong, "mmlu", group)


def num(question: str, answer: str = "18", strong: bool | None = True) -> LabelledPrompt:
    return LabelledPrompt(question, (), answer, strong, "gsm8k", "gsm8k")


def ask(book: AnswerBook, prompt: LabelledPrompt) -> tuple[str, int, int]:
    return book([{"role": "user", "content": prompt.text}], prompt.max_tokens)


def test_book_answers_right_exactly_where_the_strong_model_was_right_or_unknown() -> None:
    prompts = [mc(f"q{i}", "ABCD"[i % 4], strong=[True, False, None][i % 3]) for i in range(30)]
    prompts += [num(f"n{i}", str(i * 7), strong=[True, False, None][i % 3]) for i in range(30)]
    book = book_for(prompts)
    for p in prompts:
        text, _, _ = ask(book, p)
        assert is_correct(p, text) == (p.strong_correct is not False), (p, text)
        assert ask(book, p)[0] == text  # deterministic
    wrong = [ask(book, p)[0] for p in prompts[:30] if p.strong_correct is False]
    assert len(set(wrong)) > 1 and all(w in "ABCD" for w in wrong)  # another option, not always one


def test_book_uses_the_recorded_response_within_the_budget_and_reports_usage() -> None:
    working = "Janet sells 16 - 7 = 9 eggs at $2 each, so 9 * 2 = 18 dollars. " * 3
    entry = BookEntry("q", (), "18", True, working)
    text, prompt_tokens, completion_tokens = AnswerBook([entry])([{"role": "user", "content": "q"}], 256)
    assert text.startswith("Janet sells") and text.endswith("#### 18")
    assert completion_tokens == -(-len(text) // 4) and prompt_tokens > 0  # ~4 characters a token
    wrong = reply(BookEntry("q", (), "18", False, working))
    assert wrong.startswith("Janet") and not wrong.endswith("#### 18")  # same length, another number
    cut = reply(BookEntry("q", (), "18", True, "x" * 5000), max_tokens=16)
    assert len(cut) <= 16 * 4 and cut.endswith("#### 18")
    assert reply(BookEntry("capital?", (), "Paris", True)) == "Paris"
    assert reply(BookEntry("capital?", (), "Paris", False)) != "Paris"


def test_book_says_so_for_an_unknown_prompt() -> None:
    book = AnswerBook([BookEntry("known", (), "1", True)])
    assert book([{"role": "user", "content": "never seen"}], 8)[0] == UNKNOWN_REPLY
    assert book([], 8)[0] == UNKNOWN_REPLY and book.unknown == 2


def test_standin_answers_through_its_answerer() -> None:
    llm = StandinLLM(model="m", answerer=AnswerBook([BookEntry("q  x", (), "5", True)]))
    text, _, _ = asyncio.run(llm._generate([{"role": "user", "content": "q x"}], 32))
    assert text.endswith("#### 5")


def test_sample_is_deterministic_distinct_and_spans_groups() -> None:
    prompts = [mc(f"{g}-{i}", group=g) for g in "abcdefgh" for i in range(20)]
    prompts += [mc("a-0", group="a")]  # a repeated text: the exact cache would answer it
    picked = sample(prompts, 16)
    assert picked == sample(list(reversed(prompts)), 16)
    assert len({p.text for p in picked}) == 16
    assert {p.group for p in picked} == set("abcdefgh")
    assert len(sample(prompts, None)) == 160 and len(sample(prompts, 1000)) == 160


def test_oracle_takes_the_right_cheaper_track_then_spends_the_slack_by_saving() -> None:
    # 20 prompts both right: the SLM (cheaper). 2 only the LLM right: kept on the LLM until the
    # slack allows giving one up (quality floor 0.95 x 22 = 20.9 right answers, so one at most)
    slm_ok = [True] * 20 + [False, False]
    llm_ok = [True] * 22
    slm_cost = [0.1] * 22
    llm_cost = [1.0] * 20 + [5.0, 3.0]
    cost = oracle_cost(slm_ok, llm_ok, slm_cost, llm_cost)
    assert cost == pytest.approx(20 * 0.1 + 0.1 + 3.0)  # gave up the 5.0 one (greatest saving)
    assert oracle_cost(slm_ok, llm_ok, slm_cost, llm_cost, slack=1.0) == pytest.approx(2.0 + 8.0)
    # only the SLM right but dearer: given up for the LLM while the floor allows (0.95 x 1 right)
    assert oracle_cost([True, False], [False, True], [2.0, 0.5], [1.0, 1.0]) == pytest.approx(2.0)
    # all-LLM quality 0: nothing to keep, every prompt on its cheaper track
    assert oracle_cost([True, False], [False, False], [2.0, 2.0], [1.0, 1.0]) == pytest.approx(2.0)


def outcome(p: LabelledPrompt, policy: str, slm: str, llm: str, route: str = "slm") -> Outcome:
    return Outcome(p, Answered(route, policy, 0.1 if route == "slm" else 1.0),
                   Answered("slm", slm, 0.1), Answered("llm", llm, 1.0))


def test_summary_scores_every_arm_from_the_answers() -> None:
    ps = [mc(f"q{i}") for i in range(4)]
    rows = [outcome(ps[0], "B", "B", "B"), outcome(ps[1], "B", "A", "B", route="llm"),
            outcome(ps[2], "A", "A", "B", route="escalated"), Outcome(ps[3], None, None, None)]
    got = summary("mmlu", rows)
    assert got["prompts"] == 4 and got["quality"] == 0.5 and got["all_llm_quality"] == 0.75
    assert got["all_slm_quality"] == 0.25 and got["slm_share"] == 0.25 and got["escalated"] == 1
    assert got["cost_usd"] == pytest.approx(0.1 + 1.0 + 1.0) and got["all_llm_cost_usd"] == pytest.approx(3.0)
    assert got["quality_by_route"] == {"escalated": {"queries": 1, "quality": 0.0},
                                       "llm": {"queries": 1, "quality": 1.0},
                                       "missing": {"queries": 1, "quality": 0.0},
                                       "slm": {"queries": 1, "quality": 1.0}}
    assert got["missing"] == {"policy": 1, "slm": 1, "llm": 1}
    # the oracle: q0 to the SLM, q1 and q2 on the LLM (giving one up would leave 2 < 2.85 right)
    assert got["oracle_cost_cut"] == pytest.approx(1 - 2.1 / 3.0)
    points = curve([0.0, 1.0, 2.0, 3.0], rows, steps=5)
    assert points[0] == {"slm_share": 0.0, "quality": 0.75, "cost_cut": 0.0}
    assert points[1]["quality"] == 0.75 and points[1]["cost_cut"] == pytest.approx(0.3)


def test_tenants_forced_to_a_track_with_any_policy_and_never_escalated_on_the_slm() -> None:
    policy = make_policy("baseline-length", PolicyOptions(tenant_routes="a=slm,b=llm"))
    assert isinstance(policy, TenantForced) and isinstance(policy.inner, BaselineLengthPolicy)
    forced_slm = policy.decide(Query(text="x" * 5000, tenant="a"))
    assert forced_slm.track == "slm" and not forced_slm.escalate
    forced_llm = policy.decide(Query(text="hi", tenant="b"))
    assert forced_llm.track == "llm" and forced_llm.escalate
    routed = policy.decide(Query(text="hi", tenant="c"))
    assert routed.track == "slm" and routed.escalate and "chars" in routed.reason


def test_eval_tenants_queries_and_child_settings() -> None:
    names = tenants("r1")
    qs = queries([mc("q"), num("n")], "r1", names)
    assert [q.id for q in qs] == [f"eval-r1-{i}-{arm}" for i in range(2) for arm in ("policy", "slm", "llm")]
    assert {q.tenant for q in qs} == set(names.values()) and qs[0].max_tokens == 8 and qs[3].max_tokens == 256
    run = EvalRun("x", [], "learned", 1.0)
    env = child_env(Config(tenant_routes="vip=llm"), run, names, "http://127.0.0.1:1/v1")
    assert env["POINTSMAN_TENANT_ROUTES"] == "vip=llm,eval-r1-slm=slm,eval-r1-llm=llm"
    assert env["POINTSMAN_SEMANTIC_CACHE"] == "off" and env["POINTSMAN_LLM_API_KEY"] == ""
    assert env["POINTSMAN_LLM_MODEL"] == "gpt-4-1106-preview"  # priced as the model the book replays
