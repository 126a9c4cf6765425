"""A model build's progress: a rich bar with stage, step, elapsed and ETA on a terminal, plain
lines elsewhere (CI logs, `run all`)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from workers.slm.progress import Steps


def test_a_terminal_gets_a_bar_with_stage_step_elapsed_and_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with Steps(console) as steps:
        steps.stage("fallback search", total=3)
        steps.step("mlp down: +5.7%")
        steps.note("held-out agreement 94.0% < 95%: lm head to nbits too")
        steps.grow(1)
        steps.step("lm head: 95.3%")
    text = Text.from_ansi(out.getvalue()).plain
    assert "fallback search: lm head: 95.3%" in text and "2/4" in text
    assert "elapsed" in text and "ETA" in text
    assert "held-out agreement 94.0% < 95%" in text


def test_elsewhere_every_stage_and_step_is_a_line() -> None:
    lines: list[str] = []
    with Steps(say=lines.append) as steps:
        steps.stage("converting the GGUF", total=2)
        steps.step("dequantized 272 tensors")
        steps.step()  # a step without detail prints nothing
        steps.note("a note")
    assert lines[0].endswith("converting the GGUF (2 steps)")
    assert lines[1].endswith("converting the GGUF 1/2: dequantized 272 tensors")
    assert lines[2:] == ["a note"] and lines[0].startswith("[0:00]")
