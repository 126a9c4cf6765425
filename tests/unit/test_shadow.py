"""Shadow evaluation without a broker: which answers are shadowed, that the shadow carries what
was served, and that the LLM worker turns a shadow into an evaluation, never a Result, and gives
way to live traffic (the stand-in LLM plays the upstream)."""

import asyncio
import dataclasses
import json
from dataclasses import dataclass

import httpx
import pytest

from infra.kafka_io import Outgoing
from pipeline.decide import Incoming, RouterCore
from pipeline.eval.judge import RUBRIC, AnswerJudge
from pipeline.exact_cache import ExactCache
from pipeline.policy import FixedPolicy
from pipeline.semantic.cache import SemanticCache, SemanticSettings
from pipeline.semantic.embedders import HashingEmbedder
from pipeline.sink import EVALUATION_COLUMNS, evaluation_row
from tests.unit.test_workers import TOPICS, FakeMessage, StubModel, request, slm
from topics.codec import decode
from topics.limits import MAX_MESSAGE_BYTES
from topics.schemas import Evaluation, Result, RouteRequest, ShadowOf
from topics.shadow import encode_evaluation, shadow_chosen, shadow_request
from workers.llm_client import ChatClient, LlmSettings
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.llm_worker import LlmWorker, LlmWorkerSettings
from workers.shadow import ShadowSettings
from workers.slm_worker import SlmHandler
from workers.upstreams import Upstream

# -- which answers are shadowed ------------------------------------------------------------------


def test_shadow_choice_is_deterministic_and_takes_the_share_asked() -> None:
    ids = [(f"q{i}", f"fp{i}") for i in range(20_000)]
    chosen = [shadow_chosen(q, fp, 0.1) for q, fp in ids]
    assert chosen == [shadow_chosen(q, fp, 0.1) for q, fp in ids]  # a replay chooses the same
    assert 0.09 < sum(chosen) / len(ids) < 0.11
    # a larger rate keeps every query a smaller one chose (the samples nest)
    assert all(shadow_chosen(q, fp, 0.3) for (q, fp), c in zip(ids, chosen, strict=True) if c)
    assert not any(shadow_chosen(q, fp, 0.0) for q, fp in ids[:500])
    assert all(shadow_chosen(q, fp, 1.0) for q, fp in ids[:500])


def test_a_shadow_request_carries_the_served_answer_and_always_fits() -> None:
    base = decode(request("q1", "x" * 200_000).value(), RouteRequest)
    served = ShadowOf(route="slm", answer="\x00" * 400_000, model="smol", cost_usd=1e-6)
    value = shadow_request(base, served, routed_at=5.0)
    assert value is not None and len(value) <= MAX_MESSAGE_BYTES
    shadow = decode(value, RouteRequest)
    assert shadow.track == "llm" and shadow.shadow_of is not None
    assert shadow.shadow_of.route == "slm" and shadow.shadow_of.model == "smol"
    assert "truncated" in shadow.shadow_of.answer and shadow.query == base.query


def test_an_evaluation_with_huge_bodies_still_fits_the_broker() -> None:
    value = encode_evaluation(Evaluation(
        query_id="q", tenant="t", route="slm", judge="exact", score=1.0,
        question="\x01" * 900_000, served_answer="\x02" * 900_000, shadow_answer="\x03" * 900_000))
    assert len(value) <= MAX_MESSAGE_BYTES and decode(value, Evaluation).score == 1.0


# -- who sends shadows -------------------------------------------------------------------------------


def slm_with_rate(rate: float) -> SlmHandler:
    handler = slm(StubModel(), escalate_below=0.0)
    handler.settings = dataclasses.replace(handler.settings, shadow_rate=rate)
    return handler


def test_slm_shadows_the_answers_it_served_and_only_those() -> None:
    out = slm_with_rate(1.0)([request("1", "x"), request("2", "x"), request("3", "y")])
    results = [decode(o.value, Result) for o in out if o.topic == TOPICS.results]
    shadows = [decode(o.value, RouteRequest) for o in out if o.topic == TOPICS.route_shadow]
    assert sorted(r.query_id for r in results if r.route == "slm") == ["1", "3"]
    # one shadow per SLM-answered query; the coalesced copy shares its leader's answer
    assert sorted(s.query_id for s in shadows) == ["1", "3"]
    by_id = {r.query_id: r for r in results}
    for shadow in shadows:
        assert shadow.shadow_of is not None and shadow.shadow_of.route == "slm"
        assert shadow.shadow_of.answer == by_id[shadow.query_id].answer
        assert shadow.shadow_of.cost_usd == by_id[shadow.query_id].cost_usd
        assert shadow.shadow_of.confidence == by_id[shadow.query_id].confidence
    assert not [o for o in slm_with_rate(0.0)([request("4", "z")]) if o.topic == TOPICS.route_shadow]


def test_slm_never_shadows_what_it_escalated() -> None:
    handler = slm(StubModel(confidence=0.2), escalate_below=0.5)
    handler.settings = dataclasses.replace(handler.settings, shadow_rate=1.0)
    out = [decode(o.value, RouteRequest) for o in handler([request("1", "x")])]
    assert len(out) == 1 and out[0].escalation and out[0].shadow_of is None


def semantic_router(rate: float) -> RouterCore:
    semantic = SemanticCache(HashingEmbedder(), None, SemanticSettings(threshold=0.8))
    return RouterCore(TOPICS, FixedPolicy("slm"), ExactCache(ttl_s=60), clock=lambda: 1002.0,
                      semantic=semantic, shadow_rate=rate)


def message(qid: str, text: str, offset: int) -> Incoming:
    value = json.dumps({"id": qid, "text": text, "tenant": "acme"}).encode()
    return Incoming(TOPICS.queries, 0, offset, 1000.0, None, value)


def test_semantic_cache_hits_are_shadowed_at_the_rate() -> None:
    text = "how do I reset my password for the billing portal"
    for rate, shadowed in ((1.0, True), (0.0, False)):
        router = semantic_router(rate)
        first = router.route_one(message("src", text, 0), 1000.0)
        assert first.topic == TOPICS.route_slm  # a miss is never shadowed: it is not served yet
        source = decode(first.value, RouteRequest)
        router.learn([Result(query_id="src", tenant="acme", route="llm", answer="cached answer",
                             model="m", fingerprint=source.fingerprint, completed_at=1001.0,
                             query=source.query)])
        out = router.route_batch([message("q2", text + " please", 1)], 1002.0)
        assert decode(out[0].value, Result).route == "semantic_cache"
        assert len(out) == (2 if shadowed else 1)
        if shadowed:
            shadow = decode(out[1].value, RouteRequest)
            assert out[1].topic == TOPICS.route_shadow and shadow.query_id == "q2"
            served = shadow.shadow_of
            assert served is not None and served.route == "semantic_cache"
            assert served.answer == "cached answer" and served.source_query_id == "src"
            assert served.similarity is not None and served.similarity >= 0.8


# -- the LLM worker judges shadows --------------------------------------------------------------------


@dataclass
class Gen:
    text: str
    prompt_tokens: int = 10
    completion_tokens: int = 3


class RubricEngine:
    """The stand-in's model: grades rubric prompts `grade`, answers anything else at length."""

    def __init__(self, grade: str) -> None:
        self.grade = grade
        self.rubric_calls = 0

    def generate(self, prompts: list, **_kw: object) -> list[Gen]:
        out = []
        for prompt in prompts:
            if prompt[0]["content"] == RUBRIC:
                self.rubric_calls += 1
                out.append(Gen(self.grade))
            else:
                out.append(Gen("Rayleigh scattering of sunlight by air molecules makes the sky "
                               "look blue, since short wavelengths scatter the most."))
        return out


def shadow_message(qid: str, text: str, served: str, *, route: str = "slm") -> FakeMessage:
    base = decode(request(qid, text).value(), RouteRequest)
    value = shadow_request(base, ShadowOf(route=route, answer=served, model="smol",  # type: ignore[arg-type]
                                          cost_usd=2e-6, confidence=0.9), routed_at=1.0)
    assert value is not None
    return FakeMessage(value)


def run_worker(server: StandinServer, messages: list[FakeMessage], *, judge: AnswerJudge | None,
               shadow: ShadowSettings | None = None, live_calls: int = 0,
               concurrency: int = 16) -> tuple[list[Outgoing], LlmWorker]:
    async def main() -> tuple[list[Outgoing], LlmWorker]:
        upstream = Upstream("standin", server.base_url, "gpt-4o-mini", timeout_s=5)
        settings = LlmWorkerSettings("127.0.0.1:1", TOPICS, LlmSettings(
            upstreams=(upstream,), retries=1, backoff_s=0.01, max_concurrency=concurrency),
            shadow=shadow or ShadowSettings())
        async with httpx.AsyncClient() as http:
            worker = LlmWorker(settings, ChatClient(settings.llm, http), judge=judge)
            busy = asyncio.get_running_loop().create_future()
            for i in range(live_calls):  # live calls in flight, as _answer registers them
                worker.calls[f"live-{i}"] = busy
            outs = await asyncio.gather(*(worker._outputs(m) for m in messages))  # type: ignore[arg-type]
            busy.cancel()
        return [o for out in outs for o in out], worker

    return asyncio.run(main())


@pytest.fixture()
def echo():
    server = StandinServer(StandinLLM(faults=Faults())).start()
    yield server
    server.stop()


def test_a_shadow_becomes_an_evaluation_and_never_a_result(echo: StandinServer) -> None:
    # the echo stand-in answers "[stand-in] <text>": the same words as one served answer
    out, worker = run_worker(echo, [shadow_message("1", "Paris", "[stand-in] Paris"),
                                    shadow_message("2", "Lyon", "Paris")], judge=AnswerJudge())
    assert {o.topic for o in out} == {TOPICS.evaluations}  # no result, no dead letter
    evaluations = {e.query_id: e for e in (decode(o.value, Evaluation) for o in out)}
    assert [o.key for o in out] == [b"1", b"2"]
    first = evaluations["1"]
    assert (first.judge, first.score, first.route, first.tenant) == ("exact", 1.0, "slm", "acme")
    assert evaluations["2"].score == 0.0
    assert first.served_model == "smol" and first.shadow_model == "standin-echo"
    assert first.served_cost_usd == 2e-6 and first.shadow_cost_usd > 0
    assert first.served_answer == "[stand-in] Paris" and first.shadow_answer == "[stand-in] Paris"
    assert worker.shadows.judged == 2 and not worker.recent.get(first.fingerprint, 0.0)


def test_a_failed_shadow_is_dropped_without_a_result_or_a_letter(echo: StandinServer) -> None:
    echo.llm.faults.server_error = 1.0
    out, worker = run_worker(echo, [shadow_message("1", "Paris", "Paris")], judge=AnswerJudge())
    assert out == [] and worker.shadows.dropped == 1
    assert echo.llm.calls == 2  # the client's bounded retries, then given up: never a loop


def test_shadows_wait_for_an_idle_upstream_slot_and_are_dropped_if_none_comes(
        echo: StandinServer) -> None:
    busy = ShadowSettings(max_wait_s=0.2)
    out, worker = run_worker(echo, [shadow_message("1", "Paris", "Paris")], judge=AnswerJudge(),
                             shadow=busy, live_calls=1, concurrency=1)
    assert out == [] and echo.llm.calls == 0 and worker.shadows.dropped == 1
    out, _ = run_worker(echo, [shadow_message("1", "Paris", "Paris")], judge=AnswerJudge(),
                        shadow=busy, live_calls=0, concurrency=1)
    assert len(out) == 1 and echo.llm.calls == 1


def test_shadows_call_the_upstream_at_most_their_concurrency_at_once(echo: StandinServer) -> None:
    echo.llm.faults.slow, echo.llm.faults.slow_s = 1.0, 0.2
    messages = [shadow_message(str(i), f"q{i}", "x") for i in range(5)]
    out, worker = run_worker(echo, messages, judge=AnswerJudge(), shadow=ShadowSettings(concurrency=2))
    assert len(out) == 5 and worker.shadows.dropped == 0
    assert echo.llm.peak_in_flight == 2  # the other three waited: none was shed


def test_shadows_leave_the_client_a_slot_for_each_live_call(echo: StandinServer) -> None:
    echo.llm.faults.slow, echo.llm.faults.slow_s = 1.0, 0.2
    messages = [shadow_message(str(i), f"q{i}", "x") for i in range(3)]
    out, _ = run_worker(echo, messages, judge=AnswerJudge(), shadow=ShadowSettings(concurrency=2),
                        live_calls=1, concurrency=2)
    assert len(out) == 3 and echo.llm.peak_in_flight == 1  # 1 live + 1 shadow fill the client


def test_a_request_on_the_shadow_topic_without_a_served_answer_is_never_answered(
        echo: StandinServer) -> None:
    class OnShadowTopic(FakeMessage):
        def topic(self) -> str:
            return TOPICS.route_shadow

    plain = OnShadowTopic(request("1", "hello").value())
    out, _ = run_worker(echo, [plain], judge=AnswerJudge())
    assert out == [] and echo.llm.calls == 0


def test_without_a_judge_a_shadow_is_dropped_before_any_call(echo: StandinServer) -> None:
    out, worker = run_worker(echo, [shadow_message("1", "Paris", "Paris")], judge=None)
    assert out == [] and echo.llm.calls == 0 and worker.shadows.dropped == 1


LONG_SERVED = ("The sky is blue because the atmosphere scatters the blue part of sunlight more "
               "than the red part, so blue light reaches our eyes from every direction.")


@pytest.mark.parametrize(("grade", "judge", "score"), [
    ("Score: 0.7", "llm", 0.7),
    ("they agree", "embedding:static", None),  # no score in the reply: the embedding decides
])
def test_llm_judge_scores_free_text_and_its_cost_counts_as_shadow_cost(
        grade: str, judge: str, score: float | None) -> None:
    engine = RubricEngine(grade)
    server = StandinServer(StandinLLM(model="standin-judge", engine=engine)).start()
    try:
        out, _ = run_worker(server, [shadow_message("1", "Why is the sky blue?", LONG_SERVED)],
                            judge=AnswerJudge("llm"))
    finally:
        server.stop()
    evaluation = decode(out[0].value, Evaluation)
    assert evaluation.judge == judge and engine.rubric_calls == 1
    if score is not None:
        assert evaluation.score == pytest.approx(score)
    else:
        assert 0.0 < evaluation.score <= 1.0
    assert evaluation.judge_cost_usd > 0
    assert evaluation.shadow_cost_usd > evaluation.judge_cost_usd  # the answer's call, plus the judge's


def test_llm_judge_mode_keeps_exact_judgement_for_letters(echo: StandinServer) -> None:
    mcq = "Largest planet?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"
    out, _ = run_worker(echo, [shadow_message("1", mcq, "B")], judge=AnswerJudge("llm"))
    evaluation = decode(out[0].value, Evaluation)
    assert evaluation.judge == "exact" and echo.llm.calls == 1  # no judge call for a letter


# -- the sink's row --------------------------------------------------------------------------------


def test_a_judge_score_out_of_range_is_clamped_before_it_leaves(echo: StandinServer) -> None:
    class WildJudge(AnswerJudge):
        def exact(self, question: str, served: str, shadow: str):  # type: ignore[no-untyped-def]
            from pipeline.eval.judge import Verdict

            return Verdict("exact", float("nan") if served == "nan" else 7.0)

    out, _ = run_worker(echo, [shadow_message("1", "a", "nan"), shadow_message("2", "b", "big")],
                        judge=WildJudge())
    scores = {e.query_id: e.score for e in (decode(o.value, Evaluation) for o in out)}
    assert scores == {"1": 0.0, "2": 1.0}  # NaN would encode as null, which no sink decodes


def test_evaluation_rows_match_the_columns_and_clamp_a_wild_score() -> None:
    evaluation = Evaluation(query_id="q", tenant="t", route="semantic_cache", judge="llm",
                            score=float("nan"), similarity=0.9, submitted_at=100.0,
                            evaluated_at=200.0)
    row = evaluation_row(evaluation)
    assert len(row) == len(EVALUATION_COLUMNS)
    values = dict(zip(EVALUATION_COLUMNS, row, strict=True))
    assert values["score"] == 0.0 and values["similarity"] == 0.9
    assert values["submitted_at"].timestamp() == 100.0
    assert evaluation_row(Evaluation(query_id="q", tenant="t", route="slm", judge="x",
                                     score=3.0))[EVALUATION_COLUMNS.index("score")] == 1.0
