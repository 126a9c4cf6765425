"""Roles start apart from running: a role that cannot start says why in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.config import Config
from pipeline.roles import EXIT_CANNOT_START, REASON_FILE_ENV, CannotStart, run_role, sized_for_standin
from tests.harness import ROOT
from workers.llm_client import ChatClient
from workers.llm_standin import StandinLLM, StandinServer


def test_slm_role_without_its_model_cannot_start_and_says_why(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(bootstrap="127.0.0.1:1", slm_model=tmp_path / "my-model")
    with pytest.raises(CannotStart, match=r"^role slm cannot start: no model.onnx in POINTSMAN_SLM_MODEL="):
        run_role("slm", config)
    reason = tmp_path / "reason"
    monkeypatch.setenv(REASON_FILE_ENV, str(reason))  # as the supervisor runs it
    with pytest.raises(SystemExit) as exited:
        run_role("slm", config)
    assert exited.value.code == EXIT_CANNOT_START
    assert reason.read_text() == f"no model.onnx in POINTSMAN_SLM_MODEL={tmp_path / 'my-model'}\n"


def test_cli_run_slm_without_its_model_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "POINTSMAN_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
           "POINTSMAN_SLM_MODEL": str(tmp_path / "my-model"), "POINTSMAN_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "slm"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"pointsman: role slm cannot start: no model.onnx in POINTSMAN_SLM_MODEL={tmp_path / 'my-model'}"]


@dataclass
class Gen:
    text: str
    prompt_tokens: int = 3
    completion_tokens: int = 2


class SerialModel:
    """A model that takes its time per generation, as the SLM on a CPU does."""

    model_name = "serial"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def generate(self, prompts, *, max_tokens, **_kw):
        time.sleep(self.seconds)
        return [Gen(f"A:{p[-1]['content']}") for p in prompts]


def test_llm_client_is_sized_to_its_serial_standin() -> None:
    """The role's own stand-in answers one call at a time: the client sends one at a time, so
    no call spends its timeout queued behind others inside the stand-in (the demo lost 7 of 70
    queries that way: timeouts, then an open circuit)."""
    server = StandinServer(StandinLLM(model="standin", engine=SerialModel(0.2))).start()
    try:
        settings = sized_for_standin(Config(llm_timeout_s=1.0).llm(server.base_url))
        assert settings.llm.max_concurrency == 1
        assert settings.llm.upstreams[0].timeout_s >= 120  # one slow CPU generation, not a round trip

        async def ask_all() -> list[str]:
            async with httpx.AsyncClient() as http:
                client = ChatClient(settings.llm, http)
                done = await asyncio.gather(*(
                    client.complete([{"role": "user", "content": f"q{i}"}], max_tokens=8, temperature=0)
                    for i in range(8)))
                assert set(client.breaker_states().values()) == {"closed"}
            return [c.text for c in done]

        assert asyncio.run(ask_all()) == [f"A:q{i}" for i in range(8)]
        assert server.llm.peak_in_flight == 1  # nothing queued inside the stand-in
    finally:
        server.stop()


def test_llm_role_without_an_upstream_waits_for_the_standin_model_instead_of_echoing(
        tmp_path: Path) -> None:
    config = Config(bootstrap="127.0.0.1:1", slm_model=tmp_path / "smollm2-135m-instruct-int8")
    with pytest.raises(CannotStart, match=r"^role llm cannot start: no POINTSMAN_LLM_BASE_URL, and no "
                                          r"model.onnx in .* for the local stand-in yet"):
        run_role("llm", config)
