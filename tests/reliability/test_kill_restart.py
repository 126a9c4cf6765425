"""SIGKILL each role mid-run and restart it: every valid query still ends with exactly one row."""

from __future__ import annotations

import pytest

from tests.harness import Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.integration.workload import make_workload
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("victim", ["router", "slm", "llm", "sink"])
def test_role_killed_midway_loses_nothing(pipeline: Pipeline, broker: str, victim: str) -> None:
    work = make_workload(1200, seed=11, run=victim, long_every=4)
    pipeline.start("sink", "router", "slm", "llm")
    send(pipeline, broker, work.lines)
    progress = pipeline.wait_until(RESULTS, len(work.valid_ids) // 5, timeout=120)
    assert progress < len(work.valid_ids), "too fast to kill midway; grow the workload"
    pipeline.kill(victim)
    pipeline.start(victim)
    assert pipeline.wait_until(RESULTS, len(work.valid_ids), timeout=240) == len(work.valid_ids)
    assert pipeline.wait_until(LETTERS, work.malformed, timeout=30) == work.malformed
    assert_invariant(outcome(pipeline, f"kill -9 {victim} mid-run, restart", len(work.lines),
                             work.valid_ids, work.malformed))
