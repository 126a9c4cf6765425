import asyncio

import httpx
import pytest

from topics.errors import PermanentError, RetryableError
from workers.llm_client import ChatClient, LlmSettings
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
