"""`pointsman train semantic --from-clickhouse`: per-tenant semantic-cache thresholds from judged hits.

Reads the semantic-cache hits that shadow evaluation judged (pointsman.evaluations, route
semantic_cache, POINTSMAN_SHADOW_RATE) and the explored near misses (route semantic_near_miss,
POINTSMAN_SEMANTIC_EXPLORE_RATE), joined with their result's route reason (which says
whether the tenant threshold decided the hit), applies the rule of pipeline/semantic/thresholds.py
and writes the thresholds file the router watches (pipeline/semantic/learned.py), with its
provenance. The router picks the new file up without a restart. A tenant named in
POINTSMAN_SEMANTIC_TENANT_THRESHOLDS keeps its static threshold: it is reported, not learned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from infra.query_server import Reader
from pipeline.semantic.cache import SemanticSettings
from pipeline.semantic.learned import FORMAT, read_thresholds, write_atomically
from pipeline.semantic.thresholds import (
    EMBEDDING_CUT,
    EXACT_CUT,
    LLM_CUT,
    Choice,
    JudgedHit,
    Rule,
    choose_all,
    is_correct,
)

SPELLING = "same words up to spelling"  # the cache's reason for a hit no threshold decides

JUDGED_HITS_SQL = """
SELECT e.query_id, e.tenant, e.similarity, e.judge, e.score, r.route_reason,
       toUnixTimestamp64Milli(e.evaluated_at), e.route = 'semantic_near_miss'

FROM (
    SELECT query_id, tenant, similarity, judge, score, evaluated_at, route
    FROM pointsman.evaluations FINAL
    WHERE route IN ('semantic_cache', 'semantic_near_miss') AND similarity IS NOT NULL
) AS e
LEFT JOIN (
    SELECT query_id, route_reason FROM pointsman.results FINAL WHERE route = 'semantic_cache'
) AS r ON e.query_id = r.query_id
ORDER BY e.evaluated_at, e.query_id
"""


def judged_hits(reader: Reader, fast_accept: float) -> tuple[list[JudgedHit], dict[str, Any]]:
    """The judged hits, and where they came from (for the file's provenance)."""
    _, rows = reader.query(JUDGED_HITS_SQL)
    hits = [JudgedHit(str(tenant), float(sim), is_correct(str(judge), float(score)),
                      governed=SPELLING not in str(reason or "") and float(sim) < fast_accept,
                      explored=bool(explored))
            for _, tenant, sim, judge, score, reason, _, explored in rows]
    times = [int(row[6]) for row in rows]
    source = {"table": "pointsman.evaluations", "routes": ["semantic_cache", "semantic_near_miss"],
              "rows": len(rows), "explored": sum(h.explored for h in hits),
              "first_evaluated_at": _iso(min(times) / 1000) if times else None,
              "last_evaluated_at": _iso(max(times) / 1000) if times else None,
              "first_query_id": str(rows[0][0]) if rows else None,
              "last_query_id": str(rows[-1][0]) if rows else None}
    return hits, source


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def thresholds_document(choices: list[Choice], rule: Rule, source: Mapping[str, Any],
                        static: Mapping[str, float]) -> dict[str, Any]:
    """The file: learned thresholds (tenants with too few judged hits and static tenants are
    left out: they run with the global or their static threshold) and how each was reached.
    `kept`/`correct`/`precision_bound`: the served hits at the new threshold; `explored`: the
    near misses under the global threshold that proved a lower one."""
    tenants = {c.tenant: {"threshold": c.new, "status": c.status, "old": c.old, "judged": c.judged,
                          "kept": c.kept, "correct": c.correct, "hit_share": round(c.hit_share, 4),
                          "precision": round(c.precision, 4),
                          "precision_bound": round(c.precision_bound, 4),
                          "old_precision_bound": round(c.old_precision_bound, 4),
                          "explored": c.explored, "explored_correct": c.explored_correct}
               for c in choices if c.status != "too_few" and c.tenant not in static}
    return {"format": FORMAT, "written_at": _iso(time.time()), "source": dict(source),
            "rule": {"target": rule.target, "bound": "wilson lower, one-sided 95%", "z": rule.z,
                     "min_judged": rule.min_judged, "floor": rule.floor, "cap": rule.cap,
                     "correct_when": {"exact": EXACT_CUT, "llm": LLM_CUT, "embedding": EMBEDDING_CUT}},
            "tenants": tenants}


def run_train_semantic(console: Console, dsn: str, out: Path, *, global_threshold: float,
                       static: Mapping[str, float], target: float, min_judged: int,
                       as_json: bool = False) -> int:
    from infra.query_server import open_reader

    fast_accept = SemanticSettings().fast_accept
    hits, source = judged_hits(open_reader(dsn), fast_accept)
    if not hits:
        console.print("no judged semantic-cache hits in pointsman.evaluations (set "
                      "POINTSMAN_SHADOW_RATE); nothing written")
        return 1
    current: dict[str, float] = {}
    if out.exists():
        try:
            current = read_thresholds(out)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            current = {}  # unreadable: learn from the global threshold
    rule = Rule(target=target, min_judged=min_judged, floor=global_threshold, cap=fast_accept)
    # a tenant with a static threshold runs with it whatever is learned: counted, not learned
    choices = choose_all([h for h in hits if h.tenant not in static], rule, current)
    fixed = {t: sum(h.tenant == t and not h.explored for h in hits) for t in static}
    document = thresholds_document(choices, rule, source, static)
    write_atomically(document, out)
    rows = [_row(c) for c in choices] + [
        {"tenant": t, "status": "static", "old": static[t], "new": static[t], "judged": n}
        for t, n in sorted(fixed.items()) if n]
    report = {"out": str(out), "global_threshold": global_threshold, "source": source,
              "rule": document["rule"], "tenants": rows}
    if as_json:
        print(json.dumps(report, indent=1))
        return 0
    console.print(f"{source['rows']} judged rows ({source['explored']} explored near misses); target "
                  f"precision {target:.2f} (Wilson lower bound); wrote {out} (the router reloads it)")
    for t, n in sorted(fixed.items()):
        if n:
            console.print(f"  {t}: static threshold {static[t]:.3f} (POINTSMAN_SEMANTIC_TENANT_"
                          f"THRESHOLDS wins; not learned); {n} judged")
    for c in choices:
        console.print(f"  {c.tenant or '(none)'}: {c.status}, threshold {c.old:.3f} -> {c.new:.3f}; "
                      f"{c.judged} judged, hit share kept {c.hit_share:.1%}, precision "
                      f"{c.precision:.1%} (bound {c.old_precision_bound:.3f} -> "
                      f"{c.precision_bound:.3f})"
                      + (f"; lowered on {c.explored_correct}/{c.explored} explored near misses"
                         if c.explored else ""))
    return 0


def _row(c: Choice) -> dict[str, Any]:
    return {"tenant": c.tenant, "status": c.status, "old": c.old, "new": c.new, "judged": c.judged,
            "kept": c.kept, "correct": c.correct, "hit_share": c.hit_share,
            "precision": c.precision, "precision_bound": c.precision_bound,
            "old_precision_bound": c.old_precision_bound, "explored": c.explored,
            "explored_correct": c.explored_correct}
