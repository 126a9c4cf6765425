"""OpenAI-compatible chat client over upstreams in fallback order.

Each call: pick the first upstream whose circuit is closed (skipping ones that already failed
this request), wait for its request/token buckets, POST /chat/completions with a timeout that
never outlives the query's deadline. 429, 5xx, timeouts and connection errors are
RetryableError: back off (full jitter, or the upstream's Retry-After) and try the next upstream.
Other 4xx and malformed bodies are PermanentError. httpx errors are translated here only.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

from topics.errors import PermanentError, RetryableError
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
                       deadline: float | None = None) -> Completion:
        """`deadline` is a time.monotonic() instant after which we stop trying."""
        estimate = sum(len(m.get("content", "")) for m in messages) / 4 + max_tokens
        failed: set[str] = set()
        last: RetryableError = RetryableError("no upstream configured")
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await self._sleep(self._backoff(attempt, last), deadline)
            # pick only once a slot is free, so the circuit state is fresh when the call starts
            async with self._slots:
                state = self._pick(failed)
                if state is None:
                    last = RetryableError(f"every upstream's circuit is open: {self.breaker_states()}")
                    continue
                await self._wait_for_budget(state, estimate, deadline)
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline exceeded before the upstream answered")
                try:
                    completion = await self._call(state.upstream, messages, max_tokens, temperature,
                                                  _remaining(deadline))
                except RetryableError as exc:
                    state.breaker.record_failure()
                    failed.add(state.upstream.name)
                    last = exc
                    continue
                state.breaker.record_success()
                return completion
        raise last

    def _pick(self, failed: set[str]) -> _UpstreamState | None:
        untried = [s for s in self._states if s.upstream.name not in failed] or self._states
        return next((s for s in untried if s.breaker.allow()), None)

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
        try:
            response = await self.http.post(url, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise RetryableError(f"{upstream.name} timed out after {timeout:.1f}s") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"{upstream.name} unreachable: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryAfter(f"{upstream.name} answered {response.status_code}",
                             retry_after_s=_retry_after(response.headers.get("retry-after")))
        if response.status_code >= 400:
            raise PermanentError(f"{upstream.name} answered {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            usage = data.get("usage") or {}
            return Completion(
                text=data["choices"][0]["message"]["content"] or "",
                model=data.get("model") or upstream.model,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                upstream=upstream.name,
            )
        except (ValueError, KeyError, IndexError, TypeError):
            raise PermanentError(
                f"{upstream.name} sent a malformed completion: {response.text[:200]}"
            ) from None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
