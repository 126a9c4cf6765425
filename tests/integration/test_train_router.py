"""`pointsman train router --from-clickhouse`: refit on judged outcomes in real embedded ClickHouse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.clickhouse import Database
from pipeline.routing.policy import LearnedPolicy
from pipeline.routing.scorer import DifficultyScorer, load_model
from pipeline.semantic.embedders import StaticEmbedder
from tests.harness import ROOT
from tests.integration.test_cli import pointsman
from tests.integration.test_sink_evaluations import evaluation, write
from tests.integration.test_sink_poison import Opener, opened  # noqa: F401
from topics.schemas import Query

pytestmark = pytest.mark.integration


def judged_rows(n: int) -> list:
    """Production judgements: the SLM disagrees with the LLM on questions about tax law."""
    rows = []
    for i in range(n):
        hard = i % 2 == 0
        question = (f"Explain the tax treatment of carried interest in partnership case {i}" if hard
                    else f"What is the capital of country number {i}?")
        rows.append(evaluation(f"q{i}", tenant="acme", score=0.0 if hard else 1.0, question=question,
                               served_answer="x", shadow_answer="y" if hard else "x"))
    return rows


def test_train_router_from_clickhouse_refits_reports_old_and_new_and_the_router_reloads_it(
        opened: Opener, tmp_path: Path) -> None:  # noqa: F811 (opened: the fixture)
    directory = tmp_path / "clickhouse"
    database: Database = opened(directory)
    write(database, judged_rows(300))
    database.client.close()  # the engine takes one path per process: the command opens it next
    out = tmp_path / "router.npz"
    env = {**os.environ, "POINTSMAN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "POINTSMAN_CLICKHOUSE_DSN": f"chdb://{directory}", "POINTSMAN_ROUTER_MODEL": str(out)}
    watching = LearnedPolicy(DifficultyScorer(StaticEmbedder()), quality_target=0.95, model_path=out,
                             reload_every_s=0.0)
    hard = Query(text="Explain the tax treatment of carried interest in partnership case 7")
    run = pointsman(env, "train", "router", "--from-clickhouse", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["judged_holdout"] > 30 and report["judged_train"] + report["judged_holdout"] == 300
    assert report["new"]["judged"] == report["old"]["judged"] == report["judged_holdout"]
    assert report["new"]["auc_disagreement"] > 0.9  # it learned where this SLM disagrees
    model = load_model(out)
    assert set(model.curves) == {"choice", "open"}  # recalibrated, so the quality target still works
    assert watching.decide(hard).track == "llm"  # the running policy picked up the new file


def test_train_router_says_so_when_nothing_is_judged(opened: Opener, tmp_path: Path) -> None:  # noqa: F811
    directory = tmp_path / "clickhouse"
    opened(directory).client.close()
    env = {**os.environ, "POINTSMAN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "POINTSMAN_CLICKHOUSE_DSN": f"chdb://{directory}"}
    run = pointsman(env, "train", "router", "--from-clickhouse")
    assert run.returncode == 1 and "no judged outcomes" in run.stdout
    assert not (tmp_path / "data" / "router.npz").exists()
