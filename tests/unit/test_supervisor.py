"""The supervisor over real child processes (small Python scripts standing in for the roles)."""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.roles import EXIT_CANNOT_START
from pipeline.supervisor import Supervisor

RUNS = "import time; time.sleep(60)"
# what roles.run_role does when it cannot start, until the setup is fixed (the flag file appears)
CANNOT_START = ("import os, sys, time; from pathlib import Path\n"
                "if Path(sys.argv[1]).exists(): time.sleep(60)\n"
                "Path(os.environ['POINTSMAN_ROLE_REASON_FILE']).write_text('weights missing\\n')\n"
                f"sys.exit({EXIT_CANNOT_START})")
CRASHES_LATER = "import time, sys; time.sleep(2.0); sys.exit(1)"  # after it had been running
IGNORES_SIGTERM = ("import signal, sys, time; from pathlib import Path\n"
                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "Path(sys.argv[1]).touch(); time.sleep(60)")


def supervisor(scripts: dict[str, str], arg: Path, **kw: float) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    sup = Supervisor(list(scripts), command=lambda role: [sys.executable, "-c", scripts[role], str(arg)],
                     out=out, **kw)
    sup.start()
    return sup, out


def watch_for(sup: Supervisor, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        sup.check()
        time.sleep(0.02)


def test_a_role_that_cannot_start_is_retried_with_backoff_and_the_others_keep_running(
        tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    sup, out = supervisor({"router": RUNS, "slm": CANNOT_START}, fixed,
                          first_delay_s=0.1, max_delay_s=0.4)
    try:
        router = sup.children["router"].pid
        watch_for(sup, 30, until=lambda: out.getvalue().count("cannot start") >= 4)
        delays = re.findall(r"role slm cannot start: weights missing; retrying in ([\d.]+)s",
                            out.getvalue())
        assert delays[:4] == ["0.1", "0.2", "0.4", "0.4"], out.getvalue()  # grows, then capped
        assert "Traceback" not in out.getvalue()
        assert sup.children["router"].pid == router  # never touched
        fixed.touch()  # the operator installs the weights: the next retry starts it
        watch_for(sup, 10, until=lambda: "slm" in sup.children)
        slm = sup.children["slm"]
        watch_for(sup, 0.5)
        assert slm.poll() is None and sup.children["slm"] is slm
    finally:
        sup.stop()


def test_a_role_in_backoff_does_not_hold_up_restarting_another(tmp_path: Path) -> None:
    sup, out = supervisor({"slm": CANNOT_START, "llm": CRASHES_LATER}, tmp_path / "never",
                          first_delay_s=6.0, restart_delay_s=0.1, quick_exit_s=1.5)
    try:
        waiting = "role slm cannot start: weights missing; retrying in 6s"
        watch_for(sup, 30, until=lambda: waiting in out.getvalue())
        after = out.getvalue().index(waiting)
        watch_for(sup, 30, until=lambda: "role slm started" in out.getvalue()[after:])
        text = out.getvalue()
        assert "role slm started" in text[after:], text
        # while slm sat out its 6 s, the llm role that had been running and died came back at once
        backoff = text[after:text.index("role slm started", after)]
        assert "role llm exited with 1; restarting in 0.1s\nrole llm started" in backoff, text
    finally:
        sup.stop()


def test_stop_kills_a_child_that_ignores_sigterm_and_works_during_backoff(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    sup, out = supervisor({"sink": IGNORES_SIGTERM}, ready, stop_timeout_s=1.0)
    broken, _ = supervisor({"slm": CANNOT_START}, tmp_path / "never", first_delay_s=30)
    hung = sup.children["sink"]
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    sup.stop()
    assert time.monotonic() - started < 3 and hung.returncode == -9
    assert "role sink (pid" in out.getvalue() and "did not stop in 1s: killed" in out.getvalue()
    watch_for(broken, 0.5)  # slm failed and now waits 30 s to retry
    assert not broken.children and broken.state["slm"].restart_at is not None
    started = time.monotonic()
    broken.request_stop()
    broken.watch()  # returns at once instead of sitting out the backoff, and starts nothing
    assert time.monotonic() - started < 1 and not broken.children
