"""A local OpenAI-compatible server that stands in for the remote LLM.

It answers POST /v1/chat/completions with a real local model when given one (the demo runs the
SLM engine here, so no API key is needed), with an answerer such as the answer book (`pointsman
eval pipeline`: replies as the strong model did, workers/answer_book.py), or with a deterministic
echo for tests. It fails like
a real upstream on demand, at a seeded rate: 429 with Retry-After, 500, hangs, slow answers, and
the ways real upstreams and proxies misbehave: a valid body trickled one byte at a time, fields
of the wrong type, a body of several megabytes, a 401 that echoes the request's Authorization
header, and token counts no counter can hold.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

STANDIN_NOTICE = "local stand-in for a remote LLM (OpenAI protocol)"


@dataclass
class Faults:
    """Share of calls that fail each way; the rest answer normally. Mutable so a test can flip it."""

    rate_limited: float = 0.0  # 429 with Retry-After
    server_error: float = 0.0  # 500
    hang: float = 0.0  # never answers (the client's timeout must fire)
    slow: float = 0.0  # answers after slow_s
    trickle: float = 0.0  # a valid body, one byte every trickle_gap_s (the whole-call timeout must fire)
    wrong_types: float = 0.0  # 200 with a field of the wrong type (numeric model, content a list...)
    huge_body: float = 0.0  # 200 with a valid completion of huge_body_bytes
    echo_auth: float = 0.0  # 401 whose body quotes the request's Authorization header
    bad_usage: float = 0.0  # a valid answer with negative and > 2**32 token counts
    slow_s: float = 2.0
    trickle_gap_s: float = 2.0
    huge_body_bytes: int = 3_000_000
    retry_after_s: float = 0.2
    seed: int = 0


FAULT_NAMES = ("rate_limited", "server_error", "hang", "slow",
               "trickle", "wrong_types", "huge_body", "echo_auth", "bad_usage")


# (messages, max_tokens) -> (reply, prompt tokens, completion tokens)
Answerer = Callable[[list[dict[str, str]], int], tuple[str, int, int]]


class StandinLLM:
    def __init__(self, *, model: str = "standin-echo", engine: Any = None,
                 faults: Faults | None = None, answerer: Answerer | None = None) -> None:
        self.model = model
        self.engine = engine  # anything with SlmEngine.generate(); None = echo
        self.answerer = answerer  # answers instead of the engine when given
        self.faults = faults or Faults()
        self._random = random.Random(self.faults.seed)
        self._engine_lock = threading.Lock()
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.peak_in_flight = 0  # how many requests it served at once, at most
        self.drawn: dict[str, int] = {}  # fault name -> how many calls drew it
        self.trickle_seconds: list[float] = []  # how long each trickled call held its connection

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        fault = self._draw_fault()
        if fault is not None:
            self.drawn[fault] = self.drawn.get(fault, 0) + 1
        if fault == "rate_limited":
            self.failures += 1
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}}, status=429,
                headers={"Retry-After": str(self.faults.retry_after_s)},
            )
        if fault == "server_error":
            self.failures += 1
            return web.json_response({"error": {"message": "upstream overloaded"}}, status=500)
        if fault == "echo_auth":
            self.failures += 1  # as a misconfigured proxy or a chatty upstream does
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {
                "message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error",
                "code": "invalid_api_key"}}, status=401)
        if fault == "hang":
            self.failures += 1
            await asyncio.sleep(3600)
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_s)
        try:
            body = await request.json()
            messages = body["messages"]
            max_tokens = int(body.get("max_tokens") or 256)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        text, prompt_tokens, completion_tokens = await self._generate(messages, max_tokens)
        if fault == "huge_body":
            self.failures += 1
            text = "x" * self.faults.huge_body_bytes
        if fault == "bad_usage":
            prompt_tokens, completion_tokens = _BAD_USAGE[self.calls % len(_BAD_USAGE)]
        completion = self._completion(text, prompt_tokens, completion_tokens)
        if fault == "wrong_types":
            self.failures += 1
            _WRONG_TYPES[self.calls % len(_WRONG_TYPES)](completion)
        if fault == "trickle":
            return await self._trickle(request, json.dumps(completion).encode())
        return web.json_response(completion)

    def _completion(self, text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def _trickle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Headers at once, then the body one byte per gap: every read is quick, the call is not."""
        started = time.monotonic()
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Content-Length": str(len(body))})
        finished = False
        try:
            await response.prepare(request)
            for i in range(len(body)):
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client gave up
                await response.write(body[i:i + 1])
                await asyncio.sleep(self.faults.trickle_gap_s)
            else:
                await response.write_eof()
                finished = True
        except (ConnectionError, RuntimeError):
            pass  # the client hung up mid-body
        finally:
            self.trickle_seconds.append(time.monotonic() - started)
            if not finished:
                self.failures += 1
        return response

    def _draw_fault(self) -> str | None:
        roll = self._random.random()
        for name in FAULT_NAMES:
            share = getattr(self.faults, name)
            if roll < share:
                return name
            roll -= share
        return None

    async def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int, int]:
        if self.answerer is not None:
            return self.answerer(messages, max_tokens)
        if self.engine is None:
            last = str(messages[-1].get("content", "")) if messages else ""
            words = last.split()
            return f"[stand-in] {last}", len(words) + 3, len(words) + 1

        def run() -> tuple[str, int, int]:
            with self._engine_lock:
                gen = self.engine.generate([messages], max_tokens=max_tokens)[0]
            return gen.text, gen.prompt_tokens, gen.completion_tokens

        return await asyncio.to_thread(run)


def _numeric_model(c: dict[str, Any]) -> None:
    c["model"] = 4


def _content_list(c: dict[str, Any]) -> None:
    c["choices"][0]["message"]["content"] = [{"type": "text", "text": "parts"}]


def _usage_string(c: dict[str, Any]) -> None:
    c["usage"] = "12 tokens"


def _choices_object(c: dict[str, Any]) -> None:
    c["choices"] = {"0": c["choices"][0]}


def _tokens_string(c: dict[str, Any]) -> None:
    c["usage"]["completion_tokens"] = "7"


# each wrong_types call breaks one field, in turn
_WRONG_TYPES: tuple[Callable[[dict[str, Any]], None], ...] = (
    _numeric_model, _content_list, _usage_string, _choices_object, _tokens_string)
# (prompt_tokens, completion_tokens) of bad_usage calls, in turn
_BAD_USAGE = ((-5, 12), (7, 2**32 + 5), (-1, 2**40))


async def _cancel_the_rest() -> None:
    """Handlers still hanging (hang, trickle) end here rather than being destroyed pending."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class StandinServer:
    """Runs a StandinLLM on 127.0.0.1 in a background thread (tests, demo)."""

    def __init__(self, llm: StandinLLM, port: int = 0) -> None:
        self.llm = llm
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="standin-llm", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandinServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stand-in LLM did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        # hung handlers must not hold up stop(): cancel them after a second
        self._runner = web.AppRunner(self.llm.app(), access_log=None, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
