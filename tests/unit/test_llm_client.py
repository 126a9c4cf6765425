import asyncio
import json
import re
import time

import httpx
import pytest

from topics.errors import PermanentError, RetryableError
from topics.redact import MARK, redact
from workers.llm_client import ChatClient, LlmSettings, parse_completion
from workers.llm_standin import Faults, StandinLLM, StandinServer
from workers.upstreams import Upstream

OK = {"model": "m-1", "choices": [{"message": {"role": "assistant", "content": "hi!"}}],
      "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


def run(responses: list, **settings) -> tuple[object, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen) - 1, len(responses) - 1)]
        if isinstance(item, Exception):
            raise item
        return item

    async def call() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            upstream = Upstream("up", "http://up/v1", "gpt-4o-mini", api_key="sk-secret")
            client = ChatClient(LlmSettings(upstreams=(upstream,), backoff_s=0.001, **settings), http)
            return await client.complete([{"role": "user", "content": "x"}], max_tokens=5,
                                         temperature=0.0)

    try:
        return asyncio.run(call()), seen
    except Exception as exc:
        return exc, seen


def test_success_parses_usage_and_sends_key_and_openai_body() -> None:
    completion, seen = run([httpx.Response(200, json=OK)])
    assert completion.text == "hi!" and completion.prompt_tokens == 7
    assert seen[0].url == "http://up/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    assert b'"max_tokens":5' in seen[0].content


def test_retries_429_honouring_retry_after_then_succeeds() -> None:
    completion, seen = run([httpx.Response(429, headers={"Retry-After": "0.01"}),
                            httpx.Response(503), httpx.Response(200, json=OK)])
    assert completion.text == "hi!" and len(seen) == 3


def test_gives_up_after_retries_with_retryable_error() -> None:
    error, seen = run([httpx.Response(500)], retries=2)
    assert isinstance(error, RetryableError) and len(seen) == 3


def test_timeouts_and_connection_errors_are_retryable() -> None:
    error, _ = run([httpx.ReadTimeout("slow")], retries=1)
    assert isinstance(error, RetryableError) and "timed out" in str(error)
    error, _ = run([httpx.ConnectError("refused")], retries=0)
    assert isinstance(error, RetryableError)


@pytest.mark.parametrize("response", [httpx.Response(400, text="bad"),
                                      httpx.Response(200, json={"choices": []})])
def test_client_errors_and_malformed_bodies_are_permanent_and_not_retried(response) -> None:
    error, seen = run([response])
    assert isinstance(error, PermanentError) and len(seen) == 1


def test_api_key_is_not_in_settings_repr() -> None:
    upstream = Upstream("up", "http://up/v1", "m", api_key="sk-secret")
    assert "sk-secret" not in repr(LlmSettings(upstreams=(upstream,)))


def test_falls_back_in_order_and_the_open_circuit_spares_the_dead_upstream() -> None:
    calls = {"primary": 0, "secondary": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.host
        calls[name] += 1
        return httpx.Response(500) if name == "primary" else httpx.Response(200, json=OK)

    async def main() -> list:
        ups = (Upstream("primary", "http://primary/v1", "m"),
               Upstream("secondary", "http://secondary/v1", "m"))
        settings = LlmSettings(upstreams=ups, max_concurrency=4, backoff_s=0.001, breaker_failures=3)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = ChatClient(settings, http)
            done = await asyncio.gather(*(client.complete([{"role": "user", "content": f"{i}"}],
                                                          max_tokens=5, temperature=0) for i in range(50)))
            assert client.breaker_states() == {"primary": "open", "secondary": "closed"}
            return done

    done = asyncio.run(main())
    assert all(c.upstream == "secondary" for c in done)
    assert calls["secondary"] == 50 and calls["primary"] <= 3 + 4  # threshold + calls already started


# --- bad upstreams (issue 9): the stand-in fails the ways real upstreams and proxies do ---

KEY = "sk-unit-echo-0123456789abcdef"


def standin_call(faults: Faults, *, calls: int = 1, timeout_s: float = 5.0, retries: int = 0,
                 **settings: object) -> tuple[list[object], list[float]]:
    """`calls` sequential calls against a StandinServer; each outcome and how long it took.
    The outer 10 s guard turns a call that nothing bounds into a failure, not a hung test."""
    server = StandinServer(StandinLLM(model="gpt-4o-mini", faults=faults)).start()

    async def main() -> tuple[list[object], list[float]]:
        upstream = Upstream("standin", server.base_url, "gpt-4o-mini", api_key=KEY, timeout_s=timeout_s)
        outcomes: list[object] = []
        took: list[float] = []
        async with httpx.AsyncClient() as http:
            client = ChatClient(LlmSettings(upstreams=(upstream,), retries=retries, backoff_s=0.01,
                                            **settings), http)  # type: ignore[arg-type]
            for i in range(calls):
                started = time.monotonic()
                try:
                    outcomes.append(await asyncio.wait_for(client.complete(
                        [{"role": "user", "content": f"hello {i}"}], max_tokens=5, temperature=0), 10))
                except Exception as exc:
                    outcomes.append(exc)
                took.append(time.monotonic() - started)
        return outcomes, took

    try:
        return asyncio.run(main())
    finally:
        server.stop()


def test_a_trickled_body_is_cut_off_at_the_timeout_for_the_whole_call() -> None:
    # every byte arrives within the timeout, so only a bound on the whole call stops it
    (error,), (took,) = standin_call(Faults(trickle=1.0, trickle_gap_s=0.1), timeout_s=1.0)
    assert isinstance(error, RetryableError) and "timed out after 1.0s" in str(error)
    assert 0.9 <= took < 2.0


def test_a_trickled_body_is_also_bound_by_the_deadline() -> None:
    server = StandinServer(StandinLLM(faults=Faults(trickle=1.0, trickle_gap_s=0.1))).start()

    async def main() -> float:
        upstream = Upstream("standin", server.base_url, "m", timeout_s=30.0)
        async with httpx.AsyncClient() as http:
            client = ChatClient(LlmSettings(upstreams=(upstream,), retries=5), http)
            started = time.monotonic()
            with pytest.raises((RetryableError, PermanentError)):
                await asyncio.wait_for(client.complete([{"role": "user", "content": "x"}], max_tokens=5,
                                                       temperature=0, deadline=started + 1.0), 10)
            return time.monotonic() - started

    try:
        assert asyncio.run(main()) < 2.0
    finally:
        server.stop()


def test_fields_of_the_wrong_type_are_permanent_errors_that_name_the_field() -> None:
    outcomes, _ = standin_call(Faults(wrong_types=1.0), calls=5)
    assert all(isinstance(o, PermanentError) for o in outcomes), outcomes
    reasons = " | ".join(str(o) for o in outcomes)
    for expected in ("model is int, expected a string",
                     "choices[0].message.content is list, expected a string or null",
                     "usage is str, expected an object", "choices is dict, expected a non-empty list",
                     "a token count is str '7', expected an integer"):
        assert expected in reasons, reasons
    assert all("malformed completion" in str(o) for o in outcomes)


def test_a_huge_body_is_refused_at_the_cap_without_reading_on() -> None:
    (error,), _ = standin_call(Faults(huge_body=1.0))
    assert isinstance(error, PermanentError) and "response over 1048576 bytes" in str(error)
    (error,), _ = standin_call(Faults(), max_response_bytes=100)  # an ordinary answer, a tiny cap
    assert isinstance(error, PermanentError) and "response over 100 bytes" in str(error)


def test_a_401_that_echoes_the_authorization_header_never_carries_the_key() -> None:
    (error,), _ = standin_call(Faults(echo_auth=1.0))
    assert isinstance(error, PermanentError) and "answered 401" in str(error)
    assert KEY not in str(error) and KEY[:12] not in str(error)
    assert "Bearer [REDACTED]" in str(error)


def test_token_counts_out_of_range_are_clamped_into_uint32() -> None:
    outcomes, _ = standin_call(Faults(bad_usage=1.0), calls=3)
    counts = sorted((o.prompt_tokens, o.completion_tokens) for o in outcomes)  # type: ignore[attr-defined]
    assert counts == [(0, 12), (0, 2**32 - 1), (7, 2**32 - 1)]
    assert all(o.text.startswith("[stand-in]") for o in outcomes)  # type: ignore[attr-defined]


UP = Upstream("up", "http://up/v1", "asked-model")


def completion(**fields: object) -> bytes:
    body: dict[str, object] = {"model": "m-1", "choices": [{"message": {"content": "hi"}}],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[1, 2]", "body is list"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b"\xff\xfe garbage", "not JSON"),
    (completion(choices=[]), "choices is list, expected a non-empty list"),
    (completion(choices=["text"]), "choices[0] is str"),
    (completion(choices=[{"message": "hi"}]), "choices[0].message is str"),
    (completion(choices=[{"text": "hi"}]), "choices[0].message is missing"),
    (completion(model=["m"]), "model is list"),
    (completion(model="m" * 500), "model name is 500 characters long"),
    (completion(usage=[3, 2]), "usage is list"),
    (completion(usage={"prompt_tokens": True}), "a token count is bool"),
    (completion(usage={"prompt_tokens": 2.5}), "a token count is float"),
    (b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": NaN}}',
     "a token count is float"),
])
def test_parse_rejects_every_unexpected_shape(raw: bytes, reason: str) -> None:
    with pytest.raises(PermanentError, match=re.escape(reason)):
        parse_completion(raw, UP)


def test_parse_accepts_the_lenient_forms() -> None:
    done = parse_completion(completion(model=None, usage=None,
                                       choices=[{"message": {"content": None}}]), UP)
    assert (done.text, done.model, done.prompt_tokens, done.completion_tokens) == ("", "asked-model", 0, 0)
    done = parse_completion(completion(usage={"prompt_tokens": 12.0, "completion_tokens": 1}), UP)
    assert done.prompt_tokens == 12 and isinstance(done.prompt_tokens, int)
    done = parse_completion(b'{"choices": [{"message": {"content": "a\\ud800b"}}]}', UP)
    done.text.encode("utf-8")  # a lone surrogate is replaced, so every encoder downstream accepts it
    assert done.text.startswith("a") and done.text.endswith("b")


def test_every_upstream_key_is_registered_for_redaction_when_the_client_is_built() -> None:
    ups = (Upstream("a", "http://user:proxy-pass-123@a/v1", "m", api_key="sk-first-key-abc"),
           Upstream("b", "http://b/v1", "m", api_key="sk-second-key-def"))
    ChatClient(LlmSettings(upstreams=ups), httpx.AsyncClient())
    assert redact("sk-first-key-abc sk-second-key-def proxy-pass-123") == " ".join([MARK] * 3)


def test_each_call_made_is_a_try_in_order_with_its_upstream_and_outcome() -> None:
    """Failover and retries, as the results table's trail and attempts show them."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if request.url.host == "primary" else httpx.Response(200, json=OK)

    async def main() -> tuple[object, list]:
        ups = (Upstream("primary", "http://user:pw-in-url@primary/v1", "m-a", api_key="sk-try-secret"),
               Upstream("secondary", "http://secondary/v1", "m-b"))
        tries: list = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = ChatClient(LlmSettings(upstreams=ups, backoff_s=0.001), http)
            done = await client.complete([{"role": "user", "content": "x"}], max_tokens=5,
                                         temperature=0, tries=tries)
        return done, tries

    done, tries = asyncio.run(main())
    assert done.upstream == "secondary"  # type: ignore[attr-defined]
    assert [(t.track, t.upstream, t.model, t.outcome) for t in tries] == [
        ("llm", "primary", "m-a", "primary answered 503"),
        ("llm", "secondary", "m-1", "answered")]  # the model the upstream said it ran
    assert "pw-in-url" not in repr(tries) and "sk-try-secret" not in repr(tries)


def test_a_permanent_failure_is_a_try_too_and_the_key_it_echoes_is_redacted() -> None:
    tries: list = []
    server = StandinServer(StandinLLM(model="gpt-4o-mini", faults=Faults(echo_auth=1.0))).start()

    async def main() -> None:
        upstream = Upstream("standin", server.base_url, "gpt-4o-mini", api_key=KEY)
        async with httpx.AsyncClient() as http:
            client = ChatClient(LlmSettings(upstreams=(upstream,), retries=0), http)
            with pytest.raises(PermanentError):
                await client.complete([{"role": "user", "content": "x"}], max_tokens=5,
                                      temperature=0, tries=tries)

    try:
        asyncio.run(main())
    finally:
        server.stop()
    (step,) = tries
    assert step.upstream == "standin" and "answered 401" in step.outcome
    assert KEY not in step.outcome and len(step.outcome) <= 300


def circuit_calls(cooldown_s: float, circuit_wait_s: float) -> tuple[object, float, int]:
    """Three 500s open a one-upstream circuit; the next call's outcome, its time, the calls seen."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500) if len(seen) <= 3 else httpx.Response(200, json=OK)

    async def main() -> tuple[object, float]:
        settings = LlmSettings(upstreams=(Upstream("up", "http://up/v1", "m"),), retries=2,
                               backoff_s=0.001, breaker_failures=3, breaker_cooldown_s=cooldown_s,
                               circuit_wait_s=circuit_wait_s)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = ChatClient(settings, http)
            with pytest.raises(RetryableError):
                await client.complete([{"role": "user", "content": "a"}], max_tokens=5, temperature=0)
            assert client.breaker_states() == {"up": "open"}
            started = time.monotonic()
            try:
                outcome: object = await client.complete([{"role": "user", "content": "b"}],
                                                        max_tokens=5, temperature=0)
            except RetryableError as exc:
                outcome = exc
            return outcome, time.monotonic() - started

    outcome, took = asyncio.run(main())
    return outcome, took, len(seen)


def test_an_open_circuit_is_waited_out_without_spending_the_retries() -> None:
    completion, took, calls = circuit_calls(cooldown_s=0.3, circuit_wait_s=5)
    assert getattr(completion, "text", None) == "hi!", completion
    assert took >= 0.25 and calls == 4  # it waited for the cooldown, then one probe answered


def test_the_wait_for_an_open_circuit_is_bounded() -> None:
    error, took, calls = circuit_calls(cooldown_s=30, circuit_wait_s=0.2)
    assert isinstance(error, RetryableError) and "circuit is open" in str(error)
    assert took < 5 and calls == 3  # no call reached the upstream while its circuit was open
