"""Render a reliability report (POINTSMAN_RELIABILITY_REPORT JSON) as the RELIABILITY.md table:
`python -m tests.reliability.render report.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("fault", "fault"), ("sent", "sent"), ("valid", "valid queries"),
           ("answered", "answered (1 row each)"), ("errors", "answered with error"),
           ("dead_lettered", "malformed → dead letters"), ("lost", "lost"),
           ("duplicate_inserts", "rows inserted twice"),
           ("duplicated_rows_after_dedup", "duplicated rows after dedup"),
           ("llm_ok_call_p50_ms", "LLM call p50 ms"), ("llm_ok_call_p99_ms", "LLM call p99 ms")]


def render(records: list[dict]) -> str:
    latest = {r["fault"]: r for r in records}  # hypothesis runs several examples: keep the last
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for record in latest.values():
        lines.append("| " + " | ".join(str(record[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
