"""Progress of a long model build (`models prepare`, `quantize`): its stage, the step within
the stage, elapsed time and an ETA. A rich progress bar on a terminal; plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


class Steps:
    """`stage(name, total)` starts a stage of `total` steps, `step(detail)` ends one, `note(line)`
    prints a line above the bar. Without a console, every call becomes a line for `say`."""

    def __init__(self, console: Any = None, *, say: Callable[[str], None] | None = None) -> None:
        self._say = say or (console.print if console is not None else print)
        self._bar: Any = None
        self._task: Any = None
        self._stage = ""
        self._started = time.monotonic()
        self._done = self._total = 0
        if console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            # on a narrow terminal the description gives way, never the times
            description = TextColumn("{task.description}", table_column=Column(
                ratio=1, no_wrap=True, overflow="ellipsis", min_width=20))
            self._bar = Progress(SpinnerColumn(), description, BarColumn(bar_width=16),
                                 MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 expand=True)

    def __enter__(self) -> Steps:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def stage(self, name: str, total: int = 1) -> None:
        self._stage, self._done, self._total = name, 0, total
        if self._bar is None:
            self._say(f"[{self._elapsed()}] {name} ({total} step{'s' * (total != 1)})")
            return
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(name, total=total)

    def grow(self, extra: int) -> None:
        """The stage needs `extra` more steps than planned (a further fallback)."""
        self._total += extra
        if self._task is not None:
            self._bar.update(self._task, total=self._total)

    def step(self, detail: str = "") -> None:
        self._done += 1
        if self._bar is None:
            if detail:
                self._say(f"[{self._elapsed()}] {self._stage} {self._done}/{self._total}: {detail}")
            return
        self._bar.update(self._task, advance=1, description=f"{self._stage}: {detail}" if detail else None)

    def note(self, line: str) -> None:
        if self._bar is None:
            self._say(line)
        else:
            self._bar.console.print(line)

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self._started)
        return f"{seconds // 60}:{seconds % 60:02d}"
