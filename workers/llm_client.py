"""OpenAI-compatible chat client over upstreams in fallback order.

Each call: pick the first upstream whose circuit is closed (skipping ones that already failed
this request), wait for its request/token buckets, POST /chat/completions. The timeout bounds the
whole call (connect, headers and body: an upstream trickling a valid body one byte at a time is
cut off at `timeout_s`), never outliving the query's deadline. 429, 5xx, timeouts and connection
errors are RetryableError: back off (full jitter, or the upstream's Retry-After) and try the next
upstream. Other 4xx and malformed bodies are PermanentError. httpx errors are translated here only.
When every upstream's circuit is open, the call waits for the first cooldown to end (up to
`circuit_wait_s`, never past the deadline) and that wait spends none of its retries.

Nothing an upstream sends is trusted. The body is read up to `max_response_bytes` and no further
(more is a PermanentError). Every field is type-checked: choices a non-empty list of objects,
message an object, content a string or null (null reads as ""), model a string or absent (absent
reads as the model we asked for), usage an object or absent. Token counts must be integers (an
integral float such as 12.0 is accepted; bool, string, fractional or non-finite numbers are a
PermanentError); integers out of range are clamped into what the results table stores (UInt32):
negative -> 0, above 2**32 - 1 -> 2**32 - 1, because the answer itself is valid and paid for and
the count is only bookkeeping. Every upstream's API key is registered with topics.redact when the
client is built, and error text quoting an upstream's body is redacted before it is cut.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from topics.errors import PermanentError, RetryableError
from topics.redact import redact, register_secret
from topics.schemas import ANSWERED, MAX_OUTCOME_CHARS, Step
from workers.resilience import CircuitBreaker, TokenBucket
from workers.upstreams import Upstream


@dataclass(frozen=True)
class LlmSettings:
    upstreams: tuple[Upstream, ...] = field(
        default_factory=lambda: (Upstream("default", "http://127.0.0.1:8001/v1", "gpt-4o-mini"),)
    )
    max_concurrency: int = 16
    retries: int = 3  # attempts after the first, across upstreams
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    circuit_wait_s: float = 30.0  # how long a call waits for an open circuit before it fails
    max_response_bytes: int = 1 << 20  # an upstream body larger than this is an error, unread

    @property
    def model(self) -> str:
        return self.upstreams[0].model


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    upstream: str = ""


PROBE_POLL_S = 0.05  # while a half-open circuit's probe is out, look again this often
MAX_TOKEN_COUNT = 2**32 - 1  # results.prompt_tokens / completion_tokens are UInt32
MAX_MODEL_CHARS = 200


class RetryAfter(RetryableError):
    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(PermanentError):
    """The query's deadline passed: answering later is worth nothing to the caller."""


@dataclass
class _UpstreamState:
    upstream: Upstream
    breaker: CircuitBreaker
    requests: TokenBucket
    tokens: TokenBucket


class ChatClient:
    def __init__(self, settings: LlmSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        for upstream in settings.upstreams:  # whatever an upstream echoes back, its key never leaves
            register_secret(upstream.api_key, _url_password(upstream.base_url))
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._states = [
            _UpstreamState(
                u, CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s),
                TokenBucket(u.requests_per_minute), TokenBucket(u.tokens_per_minute),
            ) for u in settings.upstreams
        ]

    def breaker_states(self) -> dict[str, str]:
        return {s.upstream.name: s.breaker.state for s in self._states}

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                       deadline: float | None = None, tries: list[Step] | None = None) -> Completion:
        """`deadline` is a time.monotonic() instant after which we stop trying. Each upstream call
        made is appended to `tries` as it ends (its upstream, model and outcome, redacted), so
        the caller has them whether the call answers or raises."""
        estimate = sum(len(m.get("content", "")) for m in messages) / 4 + max_tokens
        failed: set[str] = set()
        last: RetryableError = RetryableError("no upstream configured")
        circuit_patience = time.monotonic() + self.settings.circuit_wait_s
        calls = 0
        while True:
            # pick only once a slot is free, so the circuit state is fresh when the call starts
            async with self._slots:
                state = self._pick(failed)
                if state is not None:
                    await self._wait_for_budget(state, estimate, deadline)
                    if deadline is not None and time.monotonic() >= deadline:
                        raise DeadlineExceeded("deadline exceeded before the upstream answered")
                    try:
                        completion = await self._call(state.upstream, messages, max_tokens,
                                                      temperature, _remaining(deadline))
                    except RetryableError as exc:
                        _tried(tries, state.upstream, str(exc))
                        state.breaker.record_failure()
                        failed.add(state.upstream.name)
                        last = exc
                    except PermanentError as exc:
                        _tried(tries, state.upstream, str(exc))
                        raise
                    else:
                        _tried(tries, state.upstream, ANSWERED, completion.model)
                        state.breaker.record_success()
                        return completion
            if state is None:
                # an open circuit is not a failed call: wait for its cooldown (a 30% failing
                # upstream opens one now and then) rather than spend the retries in a few backoffs
                wait = max(self._circuit_wait_s(failed), PROBE_POLL_S)
                if time.monotonic() + wait > min(circuit_patience, deadline or math.inf):
                    raise RetryableError(f"every upstream's circuit is open: {self.breaker_states()}")
                await asyncio.sleep(wait)
                continue
            calls += 1
            if calls > self.settings.retries:
                raise last
            await self._sleep(self._backoff(calls, last), deadline)

    def _candidates(self, failed: set[str]) -> list[_UpstreamState]:
        return [s for s in self._states if s.upstream.name not in failed] or self._states

    def _pick(self, failed: set[str]) -> _UpstreamState | None:
        return next((s for s in self._candidates(failed) if s.breaker.allow()), None)

    def _circuit_wait_s(self, failed: set[str]) -> float:
        return min(s.breaker.wait_s() for s in self._candidates(failed))

    async def _wait_for_budget(self, state: _UpstreamState, estimate: float, deadline: float | None) -> None:
        for bucket, amount in ((state.requests, 1.0), (state.tokens, estimate)):
            while (wait := bucket.wait_time(amount)) > 0:
                await self._sleep(wait, deadline)

    async def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise DeadlineExceeded("deadline exceeded before the upstream answered")
        await asyncio.sleep(seconds)

    def _backoff(self, attempt: int, exc: RetryableError) -> float:
        hinted = exc.retry_after_s if isinstance(exc, RetryAfter) else None
        if hinted is not None:
            return min(hinted, self.settings.max_backoff_s)
        ceiling = min(self.settings.backoff_s * 2 ** (attempt - 1), self.settings.max_backoff_s)
        return random.uniform(0, ceiling)  # full jitter: spread the retries of many callers

    async def _call(self, upstream: Upstream, messages: list[dict[str, str]], max_tokens: int,
                    temperature: float, remaining: float | None) -> Completion:
        timeout = upstream.timeout_s if remaining is None else max(0.001, min(upstream.timeout_s, remaining))
        headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        body = {"model": upstream.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature}
        url = upstream.base_url.rstrip("/") + "/chat/completions"
        cap = self.settings.max_response_bytes
        try:
            # httpx's timeout bounds each read; this one bounds the whole call, so an upstream
            # that trickles a body byte by byte cannot hold it past timeout_s
            async with asyncio.timeout(timeout):
                async with self.http.stream("POST", url, json=body, headers=headers,
                                            timeout=timeout) as response:
                    status = response.status_code
                    if status == 429 or status >= 500:
                        raise RetryAfter(f"{upstream.name} answered {status}",
                                         retry_after_s=_retry_after(response.headers.get("retry-after")))
                    raw, over = await _read_capped(response, cap)
        except (TimeoutError, httpx.TimeoutException):
            raise RetryableError(f"{upstream.name} timed out after {timeout:.1f}s") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"{upstream.name} unreachable: {type(exc).__name__}") from None
        except httpx.DecodingError:
            raise PermanentError(f"{upstream.name} sent a body that cannot be decoded") from None
        except httpx.HTTPError as exc:
            raise RetryableError(f"{upstream.name} failed: {type(exc).__name__}") from None
        if status >= 400:
            raise PermanentError(f"{upstream.name} answered {status}: {_excerpt(raw)}")
        if over:
            raise PermanentError(f"{upstream.name} sent a response over {cap} bytes")
        return parse_completion(raw, upstream)


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most `cap` bytes of the body, and whether there was more (we stop reading there)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


def _excerpt(raw: bytes, chars: int = 200) -> str:
    # redact before cutting: a cut through a key would leave a prefix that no longer matches
    return redact(raw.decode("utf-8", errors="replace"))[:chars]


def parse_completion(raw: bytes, upstream: Upstream) -> Completion:
    """A chat completion from the body, every field type-checked (see the module docstring)."""

    def bad(reason: str) -> PermanentError:
        return PermanentError(f"{upstream.name} sent a malformed completion: {reason}")

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise bad("not JSON") from None
    if not isinstance(data, dict):
        raise bad(f"body is {_kind(data)}, expected an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise bad(f"choices is {_kind(choices)}, expected a non-empty list")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise bad(f"choices[0] is {_kind(choice)}, expected an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise bad(f"choices[0].message is {_kind(message)}, expected an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise bad(f"choices[0].message.content is {_kind(content)}, expected a string or null")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise bad(f"model is {_kind(model)}, expected a string")
    if model is not None and len(model) > MAX_MODEL_CHARS:
        raise bad(f"model name is {len(model)} characters long")
    usage = data.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise bad(f"usage is {_kind(usage)}, expected an object")
    usage = usage or {}
    try:
        prompt_tokens = _token_count(usage.get("prompt_tokens"))
        completion_tokens = _token_count(usage.get("completion_tokens"))
    except ValueError as exc:
        raise bad(str(exc)) from None
    return Completion(
        text=_valid_unicode(content or ""), model=_valid_unicode(model or "") or upstream.model,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, upstream=upstream.name,
    )


def _token_count(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # some proxies write integers as 12.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a token count is {_kind(value)} {str(value)[:20]!r}, expected an integer")
    return min(max(value, 0), MAX_TOKEN_COUNT)


def _valid_unicode(text: str) -> str:
    """JSON may carry lone surrogates (\\ud800), which no encoder downstream accepts."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")


def _kind(value: object) -> str:
    return "missing" if value is None else type(value).__name__


def _url_password(url: str) -> str | None:
    """The password of a https://user:password@proxy/v1 base URL, a secret too."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _tried(tries: list[Step] | None, upstream: Upstream, outcome: str, model: str = "") -> None:
    if tries is not None:  # redacted before cutting: a cut through a key would no longer match
        tries.append(Step("llm", redact(model or upstream.model), upstream.name,
                          redact(outcome)[:MAX_OUTCOME_CHARS]))


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
