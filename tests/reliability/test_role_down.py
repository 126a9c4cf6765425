"""A role that cannot start: `run all` reports it, retries it, keeps the others running, and
loses nothing; what the missing role would have answered waits in Kafka until it comes up."""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.integration.workload import make_workload
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant
from workers.llm_standin import StandinLLM, StandinServer

pytestmark = pytest.mark.integration

SLM_RESULTS = "SELECT count() FROM pointsman.results FINAL WHERE route = 'slm'"
LLM_RESULTS = "SELECT count() FROM pointsman.results FINAL WHERE route = 'llm'"


@pytest.fixture()
def upstream() -> Iterator[StandinServer]:
    server = StandinServer(StandinLLM(model="gpt-4o-mini")).start()
    yield server
    server.stop()


def log_of(pipeline: Pipeline) -> str:
    return (pipeline.logs / "all.log").read_text(errors="replace")


def wait_for_log(pipeline: Pipeline, pattern: str, count: int = 1, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_of(pipeline)
        if len(re.findall(pattern, text)) >= count:
            return text
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} x{count} not in the log:\n{log_of(pipeline)[-3000:]}")


def child_pids(text: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"role \w+ started \(pid (\d+)\)", text)}


def gone(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return False


def test_slm_that_cannot_start_is_retried_and_answers_what_waited(
        pipeline: Pipeline, broker: str, tiny_model: Path, tmp_path: Path, upstream: StandinServer) -> None:
    model = tmp_path / "my-model"  # not the bundled name: nothing prepares it, as with weights missing
    pipeline.env["POINTSMAN_SLM_MODEL"] = str(model)
    pipeline.env["POINTSMAN_LLM_BASE_URL"] = upstream.base_url  # the remote LLM is up
    work = make_workload(60, seed=5, run="down", long_every=3)
    pipeline.start("all")
    send(pipeline, broker, work.lines)
    # the router, the llm track and the sink work while the slm role cannot start
    reason = f"role slm cannot start: no model.onnx in POINTSMAN_SLM_MODEL={model}; retrying in"
    wait_for_log(pipeline, re.escape(reason), count=2, timeout=90)
    assert pipeline.wait_until(LLM_RESULTS, 1, timeout=90) >= 1
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=60) == work.malformed
    assert pipeline.count(SLM_RESULTS) == 0
    assert "Traceback" not in log_of(pipeline)

    shutil.copytree(tiny_model, model)  # the operator fixes the setup; nothing is restarted by hand
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=120) == len(work.valid_ids)
    assert pipeline.count(SLM_RESULTS) > 0
    record = outcome(pipeline, "slm role cannot start (model missing), fixed while running",
                     len(work.lines), work.valid_ids, work.malformed)
    assert_invariant(record)

    supervisor = pipeline.procs.pop("all")
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(45) == 0
    assert time.monotonic() - started < 32
    assert all(gone(pid) for pid in child_pids(log_of(pipeline)))
