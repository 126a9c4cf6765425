"""A local OpenAI-compatible server that stands in for the remote LLM.

It answers POST /v1/chat/completions with a real local model when given one (the demo runs the
SLM engine here, so no API key is needed), or with a deterministic echo for tests. It fails like
a real upstream on demand: 429 with Retry-After, 500, hangs, slow answers, at a seeded rate.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
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
    slow_s: float = 2.0
    retry_after_s: float = 0.2
    seed: int = 0


class StandinLLM:
    def __init__(self, *, model: str = "standin-echo", engine: Any = None,
                 faults: Faults | None = None) -> None:
        self.model = model
        self.engine = engine  # anything with SlmEngine.generate(); None = echo
        self.faults = faults or Faults()
        self._random = random.Random(self.faults.seed)
        self._engine_lock = threading.Lock()
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.peak_in_flight = 0  # how many requests it served at once, at most

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

    async def _answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        fault = self._draw_fault()
        if fault == "rate_limited":
            self.failures += 1
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}}, status=429,
                headers={"Retry-After": str(self.faults.retry_after_s)},
            )
        if fault == "server_error":
            self.failures += 1
            return web.json_response({"error": {"message": "upstream overloaded"}}, status=500)
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
        return web.json_response({
            "id": f"chatcmpl-{self.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    def _draw_fault(self) -> str | None:
        roll = self._random.random()
        for name in ("rate_limited", "server_error", "hang", "slow"):
            share = getattr(self.faults, name)
            if roll < share:
                return name
            roll -= share
        return None

    async def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int, int]:
        if self.engine is None:
            last = str(messages[-1].get("content", "")) if messages else ""
            words = last.split()
            return f"[stand-in] {last}", len(words) + 3, len(words) + 1

        def run() -> tuple[str, int, int]:
            with self._engine_lock:
                gen = self.engine.generate([messages], max_tokens=max_tokens)[0]
            return gen.text, gen.prompt_tokens, gen.completion_tokens

        return await asyncio.to_thread(run)


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
