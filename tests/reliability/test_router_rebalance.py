"""Router consumer-group rebalances while batches are in flight: a second router joins the group
mid-run (every partition is revoked and reassigned: aiokafka's eager protocol), then leaves on
SIGTERM (another rebalance). Every valid query still ends with exactly one row.

Faust (faust-streaming 0.15) on a rebalance: the consumer drops its ack bookkeeping for the
revoked partitions (with the eager protocol, all of them), suspends the flow, clears the agents'
queues and waits for every event already taken (our noack_take batches) to be acked before it
commits; when the new assignment is ready it seeks every assigned partition back to its
committed offset, so what was read but never acked is read again. The router acks a batch only
once the broker has its outputs, in batch order, so no commit passes an unanswered event.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.harness import ROOT, Pipeline
from tests.integration.test_pipeline import LETTERS, RESULTS, send
from tests.integration.workload import make_workload
from tests.reliability.conftest import outcome
from tests.reliability.test_faults import assert_invariant

pytestmark = pytest.mark.integration

FAULT = "router rebalance mid-run (a second router joins, then leaves)"


def start_extra_router(pipeline: Pipeline, name: str) -> subprocess.Popen[bytes]:
    """A second `run router` process in the same group (same env, so the same topic prefix and
    app id); kept in pipeline.procs so the liveness checks and close() cover it."""
    log = (pipeline.logs / f"{name}.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "router"],
                            env=pipeline.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    pipeline.procs[name] = proc
    return proc


def group_members(broker: str, group: str) -> tuple[str, list[int]]:
    """The group's state, and how many partitions each member holds in it."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return (description.state.name,
            sorted(len(m.assignment.topic_partitions) for m in description.members))


def wait_for_members(broker: str, group: str, count: int, timeout: float = 60) -> list[int]:
    """Until the group is stable with `count` members that hold all 6 partitions (queries and
    backfill, 3 each) between them, each at least one; the last view otherwise."""
    deadline = time.monotonic() + timeout
    members: list[int] = []
    while time.monotonic() < deadline:
        state, members = group_members(broker, group)
        if state == "STABLE" and len(members) == count and all(members) and sum(members) == 6:
            return members
        time.sleep(0.3)
    return members


def send_paced(pipeline: Pipeline, broker: str, lines: list[bytes], chunk: int,
               pause_s: float) -> threading.Thread:
    """Send the workload in chunks, so the router has batches in flight when the group
    rebalances (a backlog sent at once is routed long before the workers answer it)."""
    def run() -> None:
        for start in range(0, len(lines), chunk):
            send(pipeline, broker, lines[start:start + chunk])
            time.sleep(pause_s)

    sender = threading.Thread(target=run, name="paced-sender", daemon=True)
    sender.start()
    return sender


def test_router_rebalance_mid_run_loses_nothing(pipeline: Pipeline, broker: str) -> None:
    pipeline.env["POINTSMAN_ROUTING_POLICY"] = "always-slm"
    work = make_workload(1500, seed=21, run="rb", long_every=4)
    total = len(work.valid_ids)
    group = f"{pipeline.topics.prefix}pointsman-router"
    pipeline.start("sink", "router", "slm", "llm")
    second: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        sender = send_paced(pipeline, broker, work.lines, chunk=20, pause_s=0.3)

        progress = pipeline.wait_until(RESULTS, total // 5, timeout=60)
        assert progress < total, "too fast to rebalance midway; grow the workload"
        second = start_extra_router(pipeline, "router2")  # joins: rebalance #1
        joined_at = (time.monotonic() - started, progress)
        # both routers hold partitions (of queries and backfill, 3 each; Faust's assignor splits)
        members = wait_for_members(broker, group, 2)
        assert len(members) == 2 and all(members) and sum(members) == 6, members
        assert sender.is_alive(), "the workload was all sent before the join; slow the sender"

        progress = pipeline.wait_until(RESULTS, total // 2, timeout=60)
        assert progress < total, "too fast to rebalance midway; grow the workload"
        assert second.poll() is None, (pipeline.logs / "router2.log").read_text()[-3000:]
        assert sender.is_alive(), "the workload was all sent before the leave; slow the sender"
        pipeline.procs.pop("router2")
        second.send_signal(signal.SIGTERM)  # leaves: rebalance #2
        left_at = (time.monotonic() - started, progress)
        assert second.wait(30) == 0
        assert wait_for_members(broker, group, 1) == [6]  # router #1 has everything back
        sender.join(60)
        assert not sender.is_alive()

        assert pipeline.wait_until(RESULTS, total, timeout=120) == total
        assert pipeline.wait_until(LETTERS, work.malformed, timeout=30) >= work.malformed
        record = outcome(pipeline, FAULT, len(work.lines), work.valid_ids, work.malformed)
        print(f"\nrouter2 joined at {joined_at[0]:.1f}s ({joined_at[1]}/{total} answered), left "
              f"(partitions {members}) at {left_at[0]:.1f}s ({left_at[1]}/{total}); done at "
              f"{time.monotonic() - started:.1f}s; {record}")
        assert_invariant(record)
        assert pipeline.procs["router"].poll() is None
    finally:
        if second is not None and second.poll() is None:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(20)
            except subprocess.TimeoutExpired:
                second.kill()
