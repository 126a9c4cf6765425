"""Worker handlers over real encoded messages, with a stub model and the stand-in LLM."""

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest

from infra.kafka_io import Outgoing
from topics.codec import decode, encode
from topics.errors import RetryableError
from topics.names import Topics
from topics.schemas import DeadLetter, Query, Result, RouteRequest, Timings
from workers.answered import AnsweredIndex
from workers.answers import Answer
from workers.coalesce import group_by_fingerprint
from workers.llm_client import ChatClient, LlmSettings
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.llm_worker import LlmWorker, LlmWorkerSettings
from workers.pricing import PriceTable
from workers.slm_worker import SlmHandler, SlmWorkerSettings
from workers.upstreams import Upstream

TOPICS = Topics("w.")


class FakeMessage:
    def __init__(self, value: bytes, offset: int = 0) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return TOPICS.route_slm

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def request(qid: str, text: str, fp: str | None = None, *, age_s: float = 0.0,
            deadline_s: float | None = None, **kw) -> FakeMessage:
    now = time.time()
    req = RouteRequest(query=Query(id=qid, text=text, tenant="acme", deadline_s=deadline_s),
                       query_id=qid, fingerprint=fp or f"fp-{text}", track="slm", reason="test",
                       submitted_at=now - age_s, routed_at=now, timings=Timings(), **kw)
    return FakeMessage(encode(req))


@dataclass
class Gen:
    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float
    finish_reason: str = "stop"


class StubModel:
    model_name = "stub"

    def __init__(self, confidence: float = 0.9, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.confidence, self.fail = confidence, fail

    def generate(self, prompts, *, max_tokens, temperature=0.0, seed=None):
        if self.fail:
            raise RuntimeError("model exploded")
        self.calls.append(len(prompts))
        return [Gen(f"A:{p[-1]['content']}", 3, 2, self.confidence) for p in prompts]


def slm(model: StubModel, escalate_below: float = 0.5) -> SlmHandler:
    settings = SlmWorkerSettings("unused:1", TOPICS, model_dir=None, escalate_below=escalate_below)  # type: ignore[arg-type]
    return SlmHandler(settings, model, PriceTable())


def test_group_by_fingerprint_drops_replayed_leader_copies() -> None:
    reqs = [decode(request(q, t).value(), RouteRequest) for q, t in
            [("1", "a"), ("2", "a"), ("1", "a"), ("3", "b")]]
    groups = group_by_fingerprint(reqs)
    assert [(g.leader.query_id, [f.query_id for f in g.followers]) for g in groups] == \
        [("1", ["2"]), ("3", [])]


def test_slm_coalesces_identical_queries_into_one_inference() -> None:
    model = StubModel()
    handler = slm(model)
    out = handler([request("1", "x"), request("2", "x"), request("3", "y")])
    results = [decode(o.value, Result) for o in out]
    assert model.calls == [2]  # two unique prompts in one batch
    assert sorted((r.query_id, r.route) for r in results) == \
        [("1", "slm"), ("2", "coalesced"), ("3", "slm")]
    assert all(o.topic == TOPICS.results for o in out)
    # a copy arriving in a later batch is answered from the recent answers: no inference
    again = [decode(o.value, Result) for o in handler([request("4", "x")])]
    assert model.calls == [2] and again[0].route == "coalesced" and again[0].answer == "A:x"


def test_slm_escalates_low_confidence_and_failures_to_llm_track() -> None:
    out = slm(StubModel(confidence=0.2))([request("1", "x"), request("2", "x")])
    assert [o.topic for o in out] == [TOPICS.route_llm] * 2
    escalated = decode(out[0].value, RouteRequest)
    assert escalated.track == "llm" and "low confidence 0.20" in (escalated.escalation or "")
    failed = decode(slm(StubModel(fail=True))([request("1", "x")])[0].value, RouteRequest)
    assert "model exploded" in (failed.escalation or "")


def test_slm_answers_itself_when_the_request_must_not_be_escalated() -> None:
    out = slm(StubModel(confidence=0.2))([request("1", "x", escalate=False), request("2", "y")])
    by_topic = {o.topic: o for o in out}
    kept = decode(by_topic[TOPICS.results].value, Result)
    assert (kept.query_id, kept.route, kept.answer) == ("1", "slm", "A:x")  # its own low-confidence answer
    assert decode(by_topic[TOPICS.route_llm].value, RouteRequest).query_id == "2"


def test_undecodable_route_request_is_dead_lettered() -> None:
    out = slm(StubModel())([FakeMessage(b"garbage", offset=4)])
    assert out[0].topic == TOPICS.deadletter
    assert decode(out[0].value, DeadLetter).offset == 4


@pytest.fixture()
def standin():
    server = StandinServer(StandinLLM(faults=Faults())).start()
    yield server
    server.stop()


def answer_all(base_url: str, messages: list[FakeMessage], retries: int = 1,
               timeout_s: float = 0.5) -> list[Outgoing]:
    """Run LlmWorker._answer for each request concurrently, as the worker's tasks do."""

    async def main() -> list[Outgoing]:
        upstream = Upstream("standin", base_url, "gpt-4o-mini", timeout_s=timeout_s)
        settings = LlmWorkerSettings("127.0.0.1:1", TOPICS, LlmSettings(
            upstreams=(upstream,), retries=retries, backoff_s=0.01))
        async with httpx.AsyncClient() as http:
            worker = LlmWorker(settings, ChatClient(settings.llm, http))
            requests = [decode(m.value(), RouteRequest) for m in messages]
            outs = await asyncio.gather(*(worker._answer(r, 100.0) for r in requests))
        return [o for out in outs for o in out]

    return asyncio.run(main())


def test_llm_answers_through_standin_with_cost_and_escalation_route(standin) -> None:
    out = answer_all(standin.base_url, [request("1", "hello there"), request("2", "hello there"),
                                        request("3", "why", escalation="low confidence")])
    results = {r.query_id: r for r in (decode(o.value, Result) for o in out)}
    assert results["1"].route == "llm" and results["1"].answer == "[stand-in] hello there"
    assert results["1"].cost_usd > 0 and results["1"].completion_tokens > 0
    assert results["2"].route == "coalesced" and results["2"].cost_usd == 0  # shared the call
    assert results["3"].route == "escalated"
    assert standin.llm.calls == 2


def test_llm_failure_after_retries_gives_error_result_and_dead_letter(standin) -> None:
    standin.llm.faults.server_error = 1.0
    out = answer_all(standin.base_url, [request("1", "hello")], retries=2)
    result = decode(next(o for o in out if o.topic == TOPICS.results).value, Result)
    letter = decode(next(o for o in out if o.topic == TOPICS.deadletter).value, DeadLetter)
    assert result.error and "500" in result.error and result.answer == ""
    assert letter.query_id == "1" and standin.llm.calls == 3  # first try + 2 retries, then stop


def test_a_query_past_its_deadline_fails_without_calling_upstream(standin) -> None:
    out = answer_all(standin.base_url, [request("1", "late", age_s=10, deadline_s=5)])
    result = decode(next(o for o in out if o.topic == TOPICS.results).value, Result)
    assert "deadline exceeded" in (result.error or "") and standin.llm.calls == 0


def test_answer_defaults_are_free() -> None:
    assert Answer("x", "m").cost_usd == 0.0


class BrokenClient:
    """A chat client with a bug: every call raises something that is not a PointsmanError."""

    settings = LlmSettings(upstreams=(Upstream("broken", "http://127.0.0.1:1", "m"),))

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, *_args: object, **_kwargs: object) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)  # the follower arrives while the call is in flight
        raise KeyError("unexpected")


def test_unexpected_llm_error_answers_leader_and_coalesced_follower() -> None:
    async def main() -> list[Outgoing]:
        client = BrokenClient()
        worker = LlmWorker(LlmWorkerSettings("127.0.0.1:1", TOPICS, client.settings), client)
        requests = [decode(request(i, "same text").value(), RouteRequest) for i in ("1", "2")]
        outs = await asyncio.wait_for(asyncio.gather(*(worker._answer(r, 1.0) for r in requests)), 5)
        assert client.calls == 1
        return [o for out in outs for o in out]

    out = asyncio.run(main())
    results = [decode(o.value, Result) for o in out if o.topic == TOPICS.results]
    letters = [decode(o.value, DeadLetter) for o in out if o.topic == TOPICS.deadletter]
    assert sorted(r.query_id for r in results) == ["1", "2"]
    assert all("internal error" in (r.error or "") for r in results)
    assert sorted(letter.query_id for letter in letters) == ["1", "2"]


class FlakyProducer:
    """Fails the first `failures` deliveries, as a broker that is briefly away does."""

    def __init__(self, failures: int) -> None:
        self.failures, self.sends = failures, 0

    async def send(self, _out: list[Outgoing]) -> asyncio.Future[None]:
        self.sends += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.sends <= self.failures:
            done.set_exception(RetryableError("broker away"))
        else:
            done.set_result(None)
        return done


def test_llm_results_are_resent_until_delivered_and_given_up_only_on_stop() -> None:
    settings = LlmWorkerSettings("127.0.0.1:1", TOPICS, BrokenClient.settings)

    async def deliver(producer: FlakyProducer, stop: bool) -> bool:
        worker = LlmWorker(settings, BrokenClient(), producer)  # type: ignore[arg-type]
        if stop:
            worker._stop.set()
        return await worker._deliver([], ("t", 0), 7)

    eventually = FlakyProducer(failures=2)
    assert asyncio.run(deliver(eventually, stop=False)) and eventually.sends == 3
    stopping = FlakyProducer(failures=5)
    assert not asyncio.run(deliver(stopping, stop=True)) and stopping.sends == 1


def result(qid: str, fp: str, answer: str = "known", *, route: str = "slm", error: str | None = None,
           completed_at: float = 1000.0) -> Result:
    return Result(query_id=qid, tenant="acme", route=route, answer=answer, model="m",  # type: ignore[arg-type]
                  error=error, fingerprint=fp, completed_at=completed_at)


def test_answered_index_knows_ids_and_fingerprints_from_successful_results_only() -> None:
    now = [1000.0]
    index = AnsweredIndex(ttl_s=60, max_query_ids=2, clock=lambda: now[0])
    index.learn([result("1", "fp-a", "A"), result("2", "fp-b", error="llm failed: 500"),
                 result("3", "fp-c", route="semantic_cache")])
    assert index.has_result("1", "fp-a") and not index.has_result("2", "fp-b")  # a failure: retry
    # the same id with other content (another text, or another tenant) is a query of its own
    assert not index.has_result("1", "fp-other")
    assert index.answer_for("fp-a") == Answer("A", "m")
    assert index.answer_for("fp-b") is None
    # a semantic-cache answer belongs to another question's fingerprint: not learned as one
    assert index.has_result("3", "fp-c") and index.answer_for("fp-c") is None
    index.learn([result("4", "fp-d")])  # bounded: the oldest id goes first
    assert not index.has_result("1", "fp-a") and index.has_result("4", "fp-d")
    now[0] += 61  # past the lookback: forgotten, as the results read-back would not see it
    assert not index.has_result("4", "fp-d") and index.answer_for("fp-a") is None


def test_slm_skips_answered_query_ids_and_coalesces_answered_fingerprints() -> None:
    model = StubModel()
    index = AnsweredIndex()
    index.learn([result("1", "fp-x", "first answer", completed_at=time.time())])
    settings = SlmWorkerSettings("unused:1", TOPICS, model_dir=None, recent_ttl_s=0)  # type: ignore[arg-type]
    handler = SlmHandler(settings, model, PriceTable(), index)
    # "1" replayed: it has its result already; "2" asks the same question under a new id
    out = handler([request("1", "x", "fp-x"), request("2", "x", "fp-x"), request("3", "y")])
    results = {r.query_id: r for r in (decode(o.value, Result) for o in out)}
    assert sorted(results) == ["2", "3"] and handler.skipped == 1
    assert results["2"].route == "coalesced" and results["2"].answer == "first answer"
    assert model.calls == [1]  # only "y" was inferred
