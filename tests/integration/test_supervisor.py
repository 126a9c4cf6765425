"""`pointsman run all` stops within its bound on SIGTERM, even with a child that hangs and a role
waiting out its restart backoff (real CLI, real broker)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.harness import Pipeline
from tests.reliability.test_role_down import child_pids, gone, log_of, wait_for_log

pytestmark = pytest.mark.integration


def test_sigterm_stops_run_all_with_a_hung_child_and_a_role_in_backoff(
        pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.env["POINTSMAN_SLM_MODEL"] = str(tmp_path / "my-model")
    pipeline.start("all")
    text = wait_for_log(pipeline, r"role slm cannot start: .*; retrying in", timeout=60)
    sink = int(re.findall(r"role sink started \(pid (\d+)\)", text)[0])
    pipeline.reader()  # the sink serves queries: it runs, its SIGTERM handler is in place
    os.kill(sink, signal.SIGSTOP)  # hung: it can no longer act on SIGTERM
    slm_starts = log_of(pipeline).count("role slm started")
    supervisor = pipeline.procs.pop("all")
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(45) == 0
    assert time.monotonic() - started < 32  # 25 s for the roles to stop, then the kill
    text = log_of(pipeline)
    assert f"role sink (pid {sink}) did not stop in 25s: killed" in text
    assert text.count("role slm started") == slm_starts  # not restarted while stopping
    assert all(gone(pid) for pid in child_pids(text))
