"""OpenAI-compatible chat client: one call = POST /v1/chat/completions, with retries.

httpx errors and HTTP statuses are translated here into the project's error tree:
429, 5xx, timeouts and connection errors are RetryableError; other 4xx are PermanentError.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httpx

from topics.errors import PermanentError, RetryableError


@dataclass(frozen=True)
class LlmSettings:
    base_url: str = "http://127.0.0.1:8001/v1"
    model: str = "gpt-4o-mini"
    api_key: str = field(default="", repr=False)  # never printed, never logged
    timeout_s: float = 30.0
    max_concurrency: int = 16
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class RetryAfter(RetryableError):
    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ChatClient:
    def __init__(self, settings: LlmSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        headers = {"Content-Type": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._headers = headers

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> Completion:
        body = {
            "model": self.settings.model, "messages": messages,
            "max_tokens": max_tokens, "temperature": temperature,
        }
        attempt = 0
        while True:
            try:
                async with self._slots:
                    return await self._call(body)
            except RetryableError as exc:
                attempt += 1
                if attempt > self.settings.retries:
                    raise
                await asyncio.sleep(self._backoff(attempt, exc))

    def _backoff(self, attempt: int, exc: RetryableError) -> float:
        hinted = exc.retry_after_s if isinstance(exc, RetryAfter) else None
        if hinted is not None:
            return min(hinted, self.settings.max_backoff_s)
        ceiling = min(self.settings.backoff_s * 2 ** (attempt - 1), self.settings.max_backoff_s)
        return random.uniform(0, ceiling)  # full jitter: spread retries of many callers

    async def _call(self, body: dict) -> Completion:
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        try:
            response = await self.http.post(
                url, json=body, headers=self._headers, timeout=self.settings.timeout_s
            )
        except httpx.TimeoutException:
            raise RetryableError(f"upstream timed out after {self.settings.timeout_s}s") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"upstream unreachable: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryAfter(
                f"upstream answered {response.status_code}",
                retry_after_s=_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 400:
            raise PermanentError(f"upstream answered {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            usage = data.get("usage") or {}
            return Completion(
                text=data["choices"][0]["message"]["content"] or "",
                model=data.get("model") or self.settings.model,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
            )
        except (ValueError, KeyError, IndexError, TypeError):
            raise PermanentError(f"upstream sent a malformed completion: {response.text[:200]}") from None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
