"""The per-tenant threshold rule (pipeline/semantic/thresholds.py) and the watched file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.semantic.cache import SemanticSettings
from pipeline.semantic.learned import FORMAT, WatchedThresholds, write_atomically
from pipeline.semantic.thresholds import (
    OFF,
    JudgedHit,
    Rule,
    choose,
    choose_all,
    correct_cut,
    wilson_bounds,
)

RULE = Rule(target=0.95, min_judged=50, floor=0.85, cap=0.97)


def band(tenant: str, low: float, high: float, n: int, correct_every: int | None) -> list[JudgedHit]:
    """n hits spread over [low, high); every `correct_every`-th one correct (None: all correct)."""
    step = (high - low) / n
    return [JudgedHit(tenant, low + i * step,
                      correct_every is None or i % correct_every == 0) for i in range(n)]


def test_wilson_is_conservative_and_needs_evidence() -> None:
    low, high = wilson_bounds(20, 20)
    assert low < 0.9 < high == 1.0  # 20 of 20 does not prove 95%
    assert wilson_bounds(100, 100)[0] > 0.97
    assert wilson_bounds(0, 0) == (0.0, 1.0)
    assert wilson_bounds(95, 100)[0] < 0.95 < wilson_bounds(95, 100)[1]


def test_a_tenant_wrong_below_090_gets_a_threshold_above_those_hits() -> None:
    hits = band("acme", 0.85, 0.90, 60, correct_every=4) + band("acme", 0.90, 0.97, 80, None)
    choice = choose("acme", hits, RULE)
    assert choice.status == "learned" and choice.old == 0.85 and choice.judged == 140
    assert choice.new == pytest.approx(0.90)  # the lowest hit of the good band: none of the bad
    assert choice.kept == choice.correct == 80 and choice.hit_share == pytest.approx(80 / 140)
    assert choice.precision_bound >= 0.95 > choice.old_precision_bound


def test_the_bound_not_the_raw_rate_decides() -> None:
    # 150 good hits over 0.90: the raw rate would still be 95% with 7 of the bad band's top served
    hits = band("acme", 0.85, 0.90, 60, correct_every=4) + band("acme", 0.90, 0.97, 150, None)
    choice = choose("acme", hits, RULE)
    assert choice.kept - choice.correct <= 3 and choice.new > 0.895
    assert choice.precision_bound >= 0.95 and choice.precision > 0.975


def test_a_good_tenant_keeps_the_floor_and_is_never_lowered_below_it() -> None:
    hits = band("globex", 0.85, 0.97, 300, None)
    choice = choose("globex", hits, RULE)
    assert choice.status == "learned" and choice.new == RULE.floor and choice.hit_share == 1.0
    # a learned raise is undone only by evidence: the same good hits bring it back to the floor
    assert choose("globex", hits, RULE, current=0.93).new == RULE.floor


def test_ungoverned_hits_count_at_every_threshold() -> None:
    # spelling repeats and fast accepts are served whatever the threshold: when they are wrong,
    # no threshold up to fast_accept meets the target, and the tenant is switched off
    bad_spelling = [JudgedHit("t", 0.9, False, governed=False) for _ in range(40)]
    good = band("t", 0.85, 0.97, 100, None)
    choice = choose("t", bad_spelling + good, RULE)
    assert choice.status == "off" and choice.new == OFF and choice.kept == 0


def test_thin_evidence_keeps_the_threshold_and_too_few_gets_the_global_one() -> None:
    thin = band("t", 0.85, 0.97, 60, None)[:55] + [JudgedHit("t", 0.95, False)] * 5
    kept = choose("t", thin, RULE, current=0.9)
    assert kept.status == "kept" and kept.new == 0.9  # 55/60 correct: neither proven nor refuted
    few = choose("t", band("t", 0.85, 0.97, 49, 2), RULE, current=0.9)
    assert few.status == "too_few" and few.new == RULE.floor


def test_choose_all_splits_by_tenant() -> None:
    hits = band("b", 0.85, 0.97, 100, None) + band("a", 0.85, 0.97, 10, None)
    assert [(c.tenant, c.status) for c in choose_all(hits, RULE)] == [("a", "too_few"),
                                                                      ("b", "learned")]


def test_correct_cut_by_judge() -> None:
    assert correct_cut("exact") == 0.5 and correct_cut("llm") == 0.5
    assert correct_cut("embedding:static") == 0.9 and correct_cut("something-new") == 0.9


def _document(tenants: dict[str, float]) -> dict[str, object]:
    return {"format": FORMAT, "tenants": {t: {"threshold": v} for t, v in tenants.items()}}


def test_watched_thresholds_reload_a_new_file_and_static_wins(tmp_path: Path) -> None:
    path = tmp_path / "semantic_thresholds.json"
    watched = WatchedThresholds({"vip": 0.99}, path, reload_every_s=0.0)
    settings = SemanticSettings(threshold=0.85, tenant_thresholds=watched)
    assert settings.threshold_for("acme") == 0.85  # no file yet: the global threshold
    write_atomically(_document({"acme": 0.91, "vip": 0.86}), path)
    assert settings.threshold_for("acme") == 0.91
    assert settings.threshold_for("vip") == 0.99  # the static threshold wins
    path.write_text("{half written")
    os.utime(path, ns=(1, 10**18))
    assert settings.threshold_for("acme") == 0.91  # a bad file keeps the last good one
    path.write_text(json.dumps(_document({"acme": 0.93})))
    os.utime(path, ns=(1, 2 * 10**18))
    assert settings.threshold_for("acme") == 0.93


@pytest.mark.parametrize("document", [{"format": 99, "tenants": {}}, {"format": FORMAT},
                                      {"format": FORMAT, "tenants": {"a": {"threshold": "x"}}}])
def test_a_malformed_file_loads_nothing(tmp_path: Path, document: dict[str, object]) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    assert dict(WatchedThresholds({}, path)) == {}


def explored(tenant: str, low: float, high: float, n: int, correct_every: int | None) -> list[JudgedHit]:
    return [JudgedHit(h.tenant, h.similarity, h.correct, explored=True)
            for h in band(tenant, low, high, n, correct_every)]


def test_explored_near_misses_that_are_right_lower_the_threshold_below_the_floor() -> None:
    served = band("t", 0.85, 0.97, 100, None)
    choice = choose("t", served + explored("t", 0.80, 0.85, 80, None), RULE)
    assert choice.status == "learned" and choice.new == pytest.approx(0.80)
    assert choice.explored == choice.explored_correct == 80 and choice.judged == 100
    # wrong near misses lower nothing; right ones only as far down as they are right
    assert choose("t", served + explored("t", 0.80, 0.85, 80, 2), RULE).new == RULE.floor
    mixed = explored("t", 0.80, 0.82, 30, 2) + explored("t", 0.82, 0.85, 80, None)
    assert 0.815 < choose("t", served + mixed, RULE).new <= 0.8205


def test_near_misses_never_lower_a_tenant_whose_served_hits_miss_the_target() -> None:
    served = band("t", 0.85, 0.90, 60, 4) + band("t", 0.90, 0.97, 80, None)
    choice = choose("t", served + explored("t", 0.80, 0.85, 100, None), RULE)
    assert choice.new == pytest.approx(0.90) and choice.explored == 0
    # and a handful of explored rows is not evidence
    few = choose("t", band("t", 0.85, 0.97, 100, None) + explored("t", 0.80, 0.85, 20, None), RULE)
    assert few.new == RULE.floor
