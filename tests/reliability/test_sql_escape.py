"""Stored text is hostile input to `pointsman sql`'s table: whatever a row holds (rich markup,
escape sequences, bidi overrides, any Unicode), printing it never crashes, never sends a control
or formatting character to the terminal, and shows each character or its visible escape."""

from __future__ import annotations

import contextlib
import io
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.cli import _print_rows

hostile_text = st.text(st.characters(blacklist_characters="│"), max_size=60) | st.lists(
    st.sampled_from(["[/oops]", "[bold]", "[/]", "[link=http://x]", ":smile:", "\x1b[31m", "\x1b]8;;",
                     "\x07", "\r", "\t", "\u202e", "\u200b", "\x9b", "\\", "[", "]", "a", " "]),
    max_size=12).map("".join)


def _shown(char: str) -> str:
    if char == "\n" or unicodedata.category(char) not in ("Cc", "Cf"):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@settings(max_examples=300, deadline=None)
@given(header=hostile_text, cell=hostile_text)
@example(header="[/oops]", cell="[/oops]")
@example(header="x", cell="\x1b[31mred\x1b[0m")
def test_any_stored_text_prints_inertly(header: str, cell: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        _print_rows([header or "h"], [(cell,)], "table")
    out = printed.getvalue()
    assert not any(c != "\n" and unicodedata.category(c) in ("Cc", "Cf") for c in out)
    visible = "".join(_shown(c) for c in cell)
    # the table may wrap a long cell across lines; every visible character is there, in order
    flat = "".join(line.strip("│ ") for line in out.splitlines())
    assert all(part in flat for part in visible.split()) or not visible.strip()
