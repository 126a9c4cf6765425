"""`pointsman train semantic --from-clickhouse`: thresholds learned from judged semantic-cache hits
in the real embedded ClickHouse, and the router's semantic cache applying them without a restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.clickhouse import Database
from pipeline.router import RouterSettings, build_semantic_cache
from pipeline.semantic.cache import SemanticEntry, SemanticKey
from pipeline.semantic.learned import WatchedThresholds
from pipeline.sink import SinkWriter
from tests.harness import ROOT
from tests.integration.test_cli import pointsman
from tests.integration.test_sink_evaluations import evaluation, write
from tests.integration.test_sink_poison import TOPICS, Message, Opener, opened, result  # noqa: F401
from topics.limits import encode_result
from topics.names import Topics
from topics.schemas import Evaluation

pytestmark = pytest.mark.integration

SOURCE = "How do I cancel my subscription?"
PARAPHRASE = "Cancel subscription please"  # static cosine ~0.899 to SOURCE, no guard conflict


def hit(qid: str, tenant: str, similarity: float, score: float, judge: str = "exact",
        route: str = "semantic_cache") -> Evaluation:
    return evaluation(qid, tenant=tenant, route=route, similarity=similarity, score=score,
                      judge=judge, served_cost_usd=0.0, source_query_id=f"src-{qid}")


def spread(low: float, high: float, n: int) -> list[float]:
    return [low + i * (high - low) / n for i in range(n)]


def judged_hits() -> tuple[list[Evaluation], list[bytes]]:
    """acme: hits under 0.90 mostly wrong, over it right (by three judges); globex: too few;
    vip: a static threshold; typo: its same-words-up-to-spelling hits (no threshold decides them)
    are wrong; initech: its explored near misses under 0.85 were right; plus an SLM judgement that
    is not the cache's."""
    rows: list[Evaluation] = []
    for i, sim in enumerate(spread(0.85, 0.90, 60)):
        rows.append(hit(f"a-low-{i}", "acme", sim, 1.0 if i % 4 == 0 else 0.0))
    for i, sim in enumerate(spread(0.90, 0.97, 80)):
        judge, score = [("exact", 1.0), ("embedding:static", 0.95), ("llm", 0.8)][i % 3]
        rows.append(hit(f"a-high-{i}", "acme", sim, score, judge))
    rows += [hit(f"g-{i}", "globex", 0.86, 0.0) for i in range(30)]
    rows += [hit(f"v-{i}", "vip", 0.86 + i / 1000, 0.0) for i in range(60)]
    rows += [hit(f"t-typo-{i}", "typo", 0.88, 0.0) for i in range(60)]
    rows += [hit(f"t-good-{i}", "typo", sim, 1.0) for i, sim in enumerate(spread(0.9, 0.97, 60))]
    rows += [hit(f"i-{i}", "initech", sim, 1.0) for i, sim in enumerate(spread(0.85, 0.97, 100))]
    rows += [hit(f"i-near-{i}", "initech", sim, 1.0, route="semantic_near_miss")
             for i, sim in enumerate(spread(0.82, 0.85, 80))]
    rows.append(evaluation("slm-1", tenant="acme", route="slm", score=0.0))
    results = [encode_result(result(f"t-typo-{i}", tenant="typo", route="semantic_cache",
                                    similarity=0.88, route_reason="semantic static: same words up "
                                    f"to spelling (cosine 0.880) vs src-t-typo-{i}: src"))
               for i in range(60)]
    return rows, results


def test_train_semantic_learns_per_tenant_thresholds_and_the_router_applies_them(
        opened: Opener, tmp_path: Path) -> None:  # noqa: F811 (opened: the fixture)
    directory = tmp_path / "clickhouse"
    database: Database = opened(directory)
    evaluations, results = judged_hits()
    write(database, evaluations)
    SinkWriter(database, TOPICS)([Message(TOPICS.results, v, n) for n, v in enumerate(results)])
    database.client.close()  # the engine takes one path per process: the command opens it next
    data = tmp_path / "data"
    out = data / "semantic_thresholds.json"
    settings = RouterSettings("127.0.0.1:1", Topics(), semantic_verifier=False,
                              semantic_tenant_thresholds="vip=0.99", semantic_thresholds_file=str(out))
    cache = build_semantic_cache(settings)  # a running router's cache, built before the file exists
    watched = cache.settings.tenant_thresholds
    assert isinstance(watched, WatchedThresholds)
    watched.reload_every_s = 0.0  # the router checks every 30 s; the test does not wait
    cache.put(SemanticEntry(SemanticKey("acme", SOURCE), "Settings > Plan > Cancel.", "m", "src", 0.0), 0.0)
    paraphrase = SemanticKey("acme", PARAPHRASE)
    before = cache.lookup_batch([paraphrase], 1.0)[0]
    assert before.entry is not None and 0.85 < before.similarity < 0.90  # type: ignore[operator]

    env = {**os.environ, "POINTSMAN_DATA_DIR": str(data), "PYTHONPATH": str(ROOT),
           "POINTSMAN_CLICKHOUSE_DSN": f"chdb://{directory}",
           "POINTSMAN_SEMANTIC_TENANT_THRESHOLDS": "vip=0.99"}
    run = pointsman(env, "train", "semantic", "--from-clickhouse", "--min-judged", "50", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    tenants = {t["tenant"]: t for t in report["tenants"]}
    assert report["source"]["rows"] == 60 + 80 + 30 + 60 + 120 + 180  # not the SLM judgement
    assert report["source"]["explored"] == 80
    acme = tenants["acme"]
    assert acme["status"] == "learned" and acme["old"] == 0.85
    assert acme["new"] == pytest.approx(0.90, abs=1e-6)  # above the mostly-wrong band
    assert acme["kept"] == acme["correct"] == 80 and acme["precision_bound"] >= 0.95
    assert tenants["globex"]["status"] == "too_few" and tenants["globex"]["new"] == 0.85
    assert tenants["vip"] == {"tenant": "vip", "status": "static", "old": 0.99, "new": 0.99,
                              "judged": 60}
    assert tenants["typo"]["status"] == "off"  # wrong hits that no threshold up to 0.97 removes
    initech = tenants["initech"]  # lowered under the global threshold: explored, proven right
    assert initech["new"] == pytest.approx(0.82, abs=1e-6) and initech["explored"] == 80
    assert initech["judged"] == 100 and initech["hit_share"] == 1.0

    document = json.loads(out.read_text())
    assert set(document["tenants"]) == {"acme", "typo", "initech"}  # too few and static tenants: not learned
    assert document["tenants"]["acme"]["judged"] == 140
    assert document["source"]["last_query_id"] and document["rule"]["target"] == 0.95

    after = cache.lookup_batch([paraphrase], 2.0)[0]  # the same cache, the new file: no restart
    assert after.entry is None and "< 0.90" in after.reason
    assert cache.settings.threshold_for("vip") == 0.99  # static wins over anything learned
    assert cache.settings.threshold_for("typo") > 1.0
    assert cache.settings.threshold_for("globex") == 0.85
    assert cache.settings.threshold_for("initech") == pytest.approx(0.82, abs=1e-6)


def test_train_semantic_says_so_when_nothing_is_judged(opened: Opener, tmp_path: Path) -> None:  # noqa: F811
    directory = tmp_path / "clickhouse"
    opened(directory).client.close()
    env = {**os.environ, "POINTSMAN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "POINTSMAN_CLICKHOUSE_DSN": f"chdb://{directory}"}
    run = pointsman(env, "train", "semantic", "--from-clickhouse")
    assert run.returncode == 1 and "no judged semantic-cache hits" in run.stdout
    assert not (tmp_path / "data" / "semantic_thresholds.json").exists()
