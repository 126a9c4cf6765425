"""`pointsman eval pipeline --file` as a user runs it: its own broker, every role, the tiny SLM."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port_pair
from tests.integration.test_cli import pointsman

pytestmark = pytest.mark.integration

PROMPTS = [
    {"text": "Which planet is known as the red planet?", "choices": ["Venus", "Mars", "Jupiter", "Saturn"],
     "answer": "Mars"},
    {"text": "What is the chemical symbol for gold?", "choices": ["Ag", "Au", "Gd", "Go"], "answer": 1,
     "strong_correct": False},
    {"text": "Which ocean is the largest?", "choices": ["Atlantic", "Indian", "Pacific", "Arctic"],
     "answer": "C", "strong_correct": True},
    {"text": "A farmer has 12 cows and buys 5 more. How many cows does he have?", "answer": "17"},
    {"text": "Tom reads 4 pages a day for 6 days. How many pages does he read?", "answer": "24",
     "strong_correct": False},
    {"text": "What is 9 times 7?", "answer": "63", "strong_correct": True},
]
KEYS = {"set", "prompts", "slm_share", "quality", "all_llm_quality", "all_slm_quality", "cost_usd",
        "all_llm_cost_usd", "oracle_cost_cut", "quality_by_route", "curves", "llm_track", "train_split",
        "escalated"}


@pytest.fixture()
def eval_env(tmp_path: Path, tiny_model: Path) -> Iterator[dict[str, str]]:
    port = free_port_pair()
    env = {**os.environ, "POINTSMAN_DATA_DIR": str(tmp_path / "data"),
           "POINTSMAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT),
           "POINTSMAN_SLM_MODEL": str(tiny_model), "POINTSMAN_SLM_THREADS": "1", "POINTSMAN_PARTITIONS": "2",
           # every SLM answer is escalated, unless the tenant is forced to the SLM
           "POINTSMAN_SLM_ESCALATE_BELOW": "1.01"}
    yield env
    pointsman(env, "down", timeout=120)  # a command killed by its timeout leaves its broker up


def test_eval_pipeline_scores_every_answer_of_a_users_file(eval_env: dict[str, str], tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    file.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    run = pointsman(eval_env, "eval", "pipeline", "--file", str(file), "--json", timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report.keys() >= KEYS
    assert report["set"] == "mine.jsonl" and report["prompts"] == len(PROMPTS)
    assert report["missing"] == {"policy": 0, "slm": 0, "llm": 0}  # every query has its result
    assert report["errors"] == {"policy": 0, "slm": 0, "llm": 0}
    # the LLM track is the answer book: right exactly where the strong model was (or unknown)
    assert report["all_llm_quality"] == pytest.approx(4 / 6)
    assert report["all_llm_cost_usd"] > 0 and report["oracle_cost_cut"] >= 0
    # escalating every SLM answer makes the policy tenant's answers the book's, route by route
    assert report["slm_share"] == 0 and report["quality"] == pytest.approx(4 / 6)
    by_route = report["quality_by_route"]
    assert set(by_route) <= {"llm", "escalated"}
    assert sum(r["queries"] for r in by_route.values()) == len(PROMPTS)
    assert report["escalated"] == by_route.get("escalated", {}).get("queries", 0)
    assert "recorded correctness" in report["llm_track"] and "stand-in" in report["llm_track"]
    assert report["train_split"].startswith("your own prompts")
    assert set(report["curves"]) == {"our_slm_labels", "routellm_labels"}
    for points in report["curves"].values():  # share 0: every prompt on the LLM, the book's quality
        assert len(points) == 21 and points[0]["quality"] == pytest.approx(4 / 6)
    # the tenant forced to the SLM got the SLM's own answers: none escalated despite the setting
    routes = pointsman(eval_env, "sql", "SELECT tenant, route, count() FROM pointsman.results FINAL "
                       f"WHERE tenant LIKE 'eval-{report['run_id']}-%' GROUP BY tenant, route "
                       "ORDER BY tenant, route", "--format", "csv")
    rows = [line.split(",") for line in routes.stdout.splitlines()[1:]]
    forced = {(t.rsplit("-", 1)[1], r): int(n) for t, r, n in rows}
    assert forced[("slm", "slm")] == len(PROMPTS) and forced[("llm", "llm")] == len(PROMPTS)
    assert ("slm", "escalated") not in forced
