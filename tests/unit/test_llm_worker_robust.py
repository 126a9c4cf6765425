"""The LLM worker never lets one message pin its partition, never emits a key, and stops in
bounded time (issue 9): every failure becomes an error result and a dead letter, and the offset
moves on; on stop, calls still open are cancelled and stay uncommitted, to replay."""

import asyncio
import logging
import time

import httpx
import pytest

from infra.kafka_io import Outgoing
from tests.unit.test_workers import TOPICS, FakeMessage, request
from topics.codec import decode
from topics.errors import PermanentError
from topics.limits import MAX_MESSAGE_BYTES
from topics.redact import register_secret
from topics.schemas import DeadLetter, Result
from workers.llm_client import ChatClient, Completion, LlmSettings
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.llm_worker import LlmWorker, LlmWorkerSettings
from workers.upstreams import Upstream

KEY = "sk-worker-unit-9f8e7d6c5b4a"
SETTINGS = LlmSettings(upstreams=(Upstream("stub", "http://127.0.0.1:1/v1", "gpt-4o-mini"),))


class StubClient:
    """A chat client that answers with `completion` or raises `error` (the worker's view of a
    client that let something through)."""

    settings = SETTINGS

    def __init__(self, completion: Completion | None = None, error: Exception | None = None) -> None:
        self.completion, self.error = completion, error

    async def complete(self, *_args: object, **_kwargs: object) -> Completion:
        if self.error is not None:
            raise self.error
        assert self.completion is not None
        return self.completion


class RecordingProducer:
    """Acknowledges every send at once and keeps what was sent (a producer stand-in: these tests
    are about what the worker hands over, the broker is exercised in tests/reliability)."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, out: list[Outgoing]) -> asyncio.Future[None]:
        self.sent += out
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def handle(client: object, message: FakeMessage) -> tuple[list[Outgoing], LlmWorker]:
    producer = RecordingProducer()
    worker = LlmWorker(LlmWorkerSettings("127.0.0.1:1", TOPICS, SETTINGS), client,  # type: ignore[arg-type]
                       producer)  # type: ignore[arg-type]
    tp = (message.topic(), message.partition())

    async def main() -> None:
        worker.tracker.started(tp, message.offset())
        await asyncio.wait_for(worker._handle(message, tp), 10)  # type: ignore[arg-type]

    asyncio.run(main())
    return producer.sent, worker


def split(out: list[Outgoing]) -> tuple[list[Result], list[DeadLetter]]:
    return ([decode(o.value, Result) for o in out if o.topic == TOPICS.results],
            [decode(o.value, DeadLetter) for o in out if o.topic == TOPICS.deadletter])


def moved_on(worker: LlmWorker, message: FakeMessage) -> bool:
    return worker.tracker.to_commit() == {(message.topic(), message.partition()): message.offset() + 1}


def test_a_numeric_model_that_slips_through_is_an_error_result_and_the_offset_moves_on() -> None:
    # before: pricing the answer raised outside the error handling; no result, offset pinned
    message = request("1", "hello")
    client = StubClient(Completion(text="hi", model=4, prompt_tokens=1, completion_tokens=1))  # type: ignore[arg-type]
    out, worker = handle(client, message)
    (result,), (letter,) = split(out)
    assert result.query_id == "1" and "internal error" in (result.error or "")
    assert letter.query_id == "1" and moved_on(worker, message)


def test_a_tombstone_or_a_bug_while_handling_still_dead_letters_and_moves_on() -> None:
    message = FakeMessage(None, offset=7)  # type: ignore[arg-type]
    out, worker = handle(StubClient(), message)
    results, (letter,) = split(out)
    assert results == [] and letter.offset == 7 and "internal error" in letter.reason
    assert moved_on(worker, message)


class ExplodingWorker(LlmWorker):
    async def _answer(self, *_args: object) -> list[Outgoing]:
        raise RuntimeError("a bug while building the result")


def test_an_exception_building_the_result_is_an_error_result_and_a_dead_letter() -> None:
    message = request("1", "hello")
    producer = RecordingProducer()
    worker = ExplodingWorker(LlmWorkerSettings("127.0.0.1:1", TOPICS, SETTINGS), StubClient(),  # type: ignore[arg-type]
                             producer)  # type: ignore[arg-type]
    tp = (message.topic(), 0)
    worker.tracker.started(tp, 0)
    asyncio.run(worker._handle(message, tp))  # type: ignore[arg-type]
    (result,), (letter,) = split(producer.sent)
    assert "a bug while building the result" in (result.error or "") and letter.query_id == "1"
    assert moved_on(worker, message)


def test_a_huge_answer_is_cut_to_fit_the_broker() -> None:
    message = request("1", "hello")
    client = StubClient(Completion(text="y" * 3_000_000, model="gpt-4o-mini", prompt_tokens=1,
                                   completion_tokens=1))
    out, worker = handle(client, message)
    assert all(len(o.value) <= MAX_MESSAGE_BYTES for o in out)
    (result,), _ = split(out)
    assert "[truncated: 3000000 bytes" in result.answer and moved_on(worker, message)


def test_no_key_in_results_dead_letters_or_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    register_secret(KEY)
    caplog.set_level(logging.INFO)
    for error in (PermanentError(f"proxy said: Authorization: Bearer {KEY}"),
                  KeyError(f"Bearer {KEY}")):  # a mapped error, and a bug quoting the key
        out, _ = handle(StubClient(error=error), request("1", "hello"))
        (result,), (letter,) = split(out)
        assert "[REDACTED]" in (result.error or "") and "[REDACTED]" in letter.reason
        assert all(KEY.encode() not in o.value for o in out)
    answered, _ = handle(StubClient(Completion(f"echo {KEY}", "m", 1, 1)), request("2", "x"))
    assert all(KEY.encode() not in o.value for o in answered)
    assert caplog.records and KEY not in caplog.text  # no filter installed: the worker redacts


def test_stop_cancels_calls_still_open_after_the_grace_and_keeps_them_uncommitted() -> None:
    server = StandinServer(StandinLLM(faults=Faults(hang=1.0))).start()

    async def main() -> tuple[float, LlmWorker, set[asyncio.Task[None]]]:
        upstream = Upstream("standin", server.base_url, "m", timeout_s=60.0)
        settings = LlmWorkerSettings("127.0.0.1:1", TOPICS, LlmSettings(upstreams=(upstream,)),
                                     stop_grace_s=0.3)
        async with httpx.AsyncClient() as http:
            worker = LlmWorker(settings, ChatClient(settings.llm, http), RecordingProducer())  # type: ignore[arg-type]
            tasks: set[asyncio.Task[None]] = set()
            for i in range(3):
                message = FakeMessage(request(str(i), f"q{i}").value(), offset=i)
                worker._start(message, tasks)  # type: ignore[arg-type]
            await asyncio.sleep(0.3)  # the calls are open upstream
            started = time.monotonic()
            kept = set(tasks)
            await worker._drain(tasks)
            return time.monotonic() - started, worker, kept

    try:
        took, worker, tasks = asyncio.run(main())
    finally:
        server.stop()
    assert took < 1.5 and all(t.cancelled() for t in tasks)
    assert worker.tracker.in_flight == 3 and worker.tracker.to_commit() == {(TOPICS.route_slm, 0): 0}


class CountingClient(StubClient):
    def __init__(self, completion: Completion) -> None:
        super().__init__(completion)
        self.calls = 0

    async def complete(self, *args: object, **kwargs: object) -> Completion:
        self.calls += 1
        return await super().complete(*args, **kwargs)


def test_a_backlogged_request_already_answered_is_not_paid_for_again() -> None:
    from tests.unit.test_workers import result
    from workers.answered import AnsweredIndex

    client = CountingClient(Completion("fresh", "gpt-4o-mini", 3, 4))
    index = AnsweredIndex()
    index.learn([result("1", "fp-x", "first answer", route="llm", completed_at=time.time())])
    worker = LlmWorker(LlmWorkerSettings("127.0.0.1:1", TOPICS, SETTINGS), client,  # type: ignore[arg-type]
                       RecordingProducer(), answered=index)  # type: ignore[arg-type]
    sent: list[Outgoing] = []

    async def main() -> None:
        for offset, message in enumerate([request("1", "x", "fp-x"), request("2", "x", "fp-x"),
                                          request("3", "y")]):
            message._offset = offset
            tp = (message.topic(), message.partition())
            worker.tracker.started(tp, offset)
            await worker._handle(message, tp)  # type: ignore[arg-type]
        sent.extend(worker.producer.sent)  # type: ignore[attr-defined]

    asyncio.run(main())
    results = {r.query_id: r for r in split(sent)[0]}
    # "1" has its result on the topic already; "2" asks the answered question under a new id
    assert sorted(results) == ["2", "3"]
    assert results["2"].route == "coalesced" and results["2"].answer == "first answer"
    assert client.calls == 1  # only "y" reached the upstream
    assert worker.tracker.to_commit() == {(TOPICS.route_slm, 0): 3}  # every offset moved on
