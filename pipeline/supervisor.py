"""`pointsman run all`: every role as a child process, restarted when it dies, stopped on a signal.

A role that cannot start (pipeline/roles.py: exit code EXIT_CANNOT_START, reason in a file) is
reported in one line and retried with a growing delay; the others keep running, and what the
missing role would consume waits in Kafka. Each role's restart is scheduled on its own, so a
role in its backoff never delays watching (or restarting) another. Stopping sends SIGTERM to
every child and kills whatever has not exited when `stop_timeout_s` runs out: a hung child
cannot hold `run all` (or the demo) up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline.roles import EXIT_CANNOT_START, REASON_FILE_ENV

Command = Callable[[str], list[str]]


def role_command(role: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", role]


@dataclass
class _Role:
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    delay_s: float = 0.0  # the last backoff; grows while the role keeps dying young


class Supervisor:
    def __init__(self, roles: Sequence[str], *, command: Command = role_command,
                 stop_timeout_s: float = 25.0, quick_exit_s: float = 30.0,
                 restart_delay_s: float = 1.0, first_delay_s: float = 1.0, max_delay_s: float = 30.0,
                 out: TextIO | None = None, env: Mapping[str, str] | None = None) -> None:
        self.roles = list(roles)
        self.env = dict(env or {})  # settings for the children over this process's environment
        self.command = command
        self.stop_timeout_s = stop_timeout_s
        self.quick_exit_s = quick_exit_s  # dying sooner than this after a start backs off further
        self.restart_delay_s = restart_delay_s  # after a role that had been running dies
        self.first_delay_s = first_delay_s  # after the first quick death; doubles from there
        self.max_delay_s = max_delay_s  # a fixed setup is picked up within this long
        self.out = out
        self.state = {role: _Role() for role in self.roles}
        self._reasons = Path(tempfile.mkdtemp(prefix="pointsman-roles-"))
        self._stopping = False

    @property
    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return {r: s.process for r, s in self.state.items() if s.process is not None}

    def _say(self, text: str) -> None:
        print(text, file=self.out or sys.stderr, flush=True)

    def spawn(self, role: str) -> None:
        reason_file = self._reasons / role
        reason_file.unlink(missing_ok=True)
        state = self.state[role]
        state.started_at = time.monotonic()
        state.restart_at = None
        state.process = subprocess.Popen(
            self.command(role), env={**os.environ, **self.env, REASON_FILE_ENV: str(reason_file)})
        self._say(f"role {role} started (pid {state.process.pid})")

    def start(self) -> None:
        for role in self.roles:
            self.spawn(role)

    def run(self) -> None:
        """`run all`: the handlers first, so a signal that comes while the roles start stops them too."""
        self.install_signal_handlers()
        self.start()
        self.watch()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_stop())

    def watch(self) -> None:
        """Until request_stop (SIGINT/SIGTERM, handlers installed by `run`): restart roles that
        exit, then stop them all."""
        while not self._stopping:
            self.check()
            self._sleep(0.2)
        self.stop()

    def check(self) -> None:
        """One pass: notice roles that exited and schedule them; start those whose time came."""
        now = time.monotonic()
        for role, state in self.state.items():
            if self._stopping:
                return
            if state.process is not None:
                code = state.process.poll()
                if code is not None:
                    self._exited(role, state, code, now)
            elif state.restart_at is not None and now >= state.restart_at:
                self.spawn(role)

    def _exited(self, role: str, state: _Role, code: int, now: float) -> None:
        state.process = None
        if now - state.started_at < self.quick_exit_s:  # misconfigured or broken: do not spin
            state.delay_s = min(max(state.delay_s * 2, self.first_delay_s), self.max_delay_s)
        else:
            state.delay_s = 0.0  # it had been working: the next quick death starts over
        delay = state.delay_s or self.restart_delay_s
        state.restart_at = now + delay
        reason = self._reason(role)
        if code == EXIT_CANNOT_START or reason:
            self._say(f"role {role} cannot start: {reason or 'no reason given'}; "
                      f"retrying in {_seconds(delay)}")
        else:
            self._say(f"role {role} exited with {code}; restarting in {_seconds(delay)}")

    def _reason(self, role: str) -> str:
        try:
            return (self._reasons / role).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def request_stop(self) -> None:
        self._stopping = True

    def stop(self) -> None:
        """SIGTERM every child; SIGKILL those still there after stop_timeout_s."""
        self._stopping = True
        children = self.children
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for role, child in children.items():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"role {role} (pid {child.pid}) did not stop in "
                          f"{self.stop_timeout_s:.0f}s: killed")
                child.kill()
                child.wait()
        for state in self.state.values():
            state.process = None
            state.restart_at = None
        shutil.rmtree(self._reasons, ignore_errors=True)


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}s"
