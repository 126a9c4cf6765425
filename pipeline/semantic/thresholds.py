"""Per-tenant semantic-cache thresholds learned from judged hits: pure, no I/O.

Input: the semantic-cache hits that shadow evaluation judged (pointsman.evaluations, route
semantic_cache): each hit's similarity and whether the served answer agreed with the LLM's fresh
one. Output: per tenant, the lowest threshold whose served hits keep a *conservative* precision
(the one-sided 95% Wilson lower bound, not the raw rate) at or above the target.

Why a lower bound: the threshold is chosen by scanning every candidate, and the raw rate at the
chosen one is biased upwards (the scan stops where the sample happens to look good, most of all
near the top, where few hits remain); a precision target is a promise to users, so each candidate
must prove it with the evidence it has. Wilson rather than the normal interval because precision
lives near 1 and the normal bound of 20 hits out of 20 is 1.0.

What judged hits can and cannot say: they exist only above the threshold that served them, so
they can justify RAISING a threshold (cutting the band where served hits were wrong), never
lowering it below the global threshold they were served under: below it there is no evidence.
The global threshold is therefore the floor for served hits. Going below it takes explored near
misses (POINTSMAN_SEMANTIC_EXPLORE_RATE: a share of the candidates just under a tenant's threshold
judged by a shadow, never served: `explored`): a threshold t under the floor qualifies only when the
served hits at the floor meet the target AND the explored near misses in [t, floor) do, each by its
own bound. Two pools that each meet the target make a union that does, whatever their sampling
rates (hits are shadowed at POINTSMAN_SHADOW_RATE, near misses at the explore rate, so they are
never pooled into one rate). Explored near misses above the floor (under a raised threshold) are
not used: a raise is undone by the served hits judged before it.

Which hits a threshold governs: with the MiniLM verifier, the tenant threshold decides only the
grey band (the verifier's cosine); a static cosine >= `fast_accept` and a same-words-up-to-spelling
repeat are hits whatever the threshold (up to `fast_accept`). Those "ungoverned" hits are served at
every candidate, so they count in every candidate's precision, and candidates stop at
`fast_accept` (above it every hit would go through the verifier, whose cosine such hits lack).

A tenant with no candidate meeting the target: when even the optimistic (upper) bound of its hits
at the floor is under the target, the cache fails this tenant wherever it was measured, and it is
switched off (`OFF`); otherwise the evidence is too thin to tell, and its threshold is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Z_ONE_SIDED_95 = 1.6448536269514722
OFF = 1.01  # above any cosine, and above fast_accept: no static or spelling hit either
# a hit is correct when the judge's score reaches this: exact judges give 0 or 1, the LLM rubric
# 0-1 with 0.5 its "partly" midpoint (as `pointsman report` counts disagreement); an embedding
# cosine of two answers is high even when they differ (same topic, same words), so only near
# agreement counts
EXACT_CUT = 0.5
LLM_CUT = 0.5
EMBEDDING_CUT = 0.9

Status = Literal["learned", "kept", "off", "too_few"]


def correct_cut(judge: str) -> float:
    """The score at which a judged hit counts as correct, by judge (`exact`, `llm`, `embedding:*`);
    an unknown judge is held to the strictest cut."""
    if judge == "exact":
        return EXACT_CUT
    if judge == "llm":
        return LLM_CUT
    return EMBEDDING_CUT


def is_correct(judge: str, score: float) -> bool:
    return score >= correct_cut(judge)


def wilson_bounds(correct: int, n: int, z: float = Z_ONE_SIDED_95) -> tuple[float, float]:
    """Wilson score interval of a proportion: (lower, upper); (0, 1) with no observations."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


@dataclass(frozen=True, slots=True)
class JudgedHit:
    tenant: str
    similarity: float  # the cosine the hit was decided on
    correct: bool
    governed: bool = True  # False: a hit the tenant threshold does not decide (see the docstring)
    explored: bool = False  # a near miss judged, not served (exploration)


@dataclass(frozen=True)
class Choice:
    tenant: str
    status: Status
    old: float  # the threshold the tenant ran with
    new: float  # the threshold to run with: old when kept, the global one when too few
    judged: int
    kept: int  # judged hits still served at `new`
    correct: int  # of those, judged correct
    precision_bound: float  # Wilson lower bound of the precision at `new` (0 when off)
    old_precision_bound: float  # the same at `old`
    explored: int = 0  # explored near misses under the floor that `new` would now serve
    explored_correct: int = 0  # of those, judged correct

    @property
    def hit_share(self) -> float:
        """Of the judged hits, the share `new` still serves."""
        return self.kept / self.judged if self.judged else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.kept if self.kept else 0.0


@dataclass(frozen=True)
class Rule:
    target: float = 0.95  # Wilson lower bound of the precision to keep
    min_judged: int = 100  # fewer judged hits: the tenant keeps the global threshold
    floor: float = 0.85  # the global threshold: judged hits say nothing below it
    cap: float = 0.97  # fast_accept: the highest threshold the judged similarities speak for
    z: float = Z_ONE_SIDED_95


def _served(hits: Sequence[JudgedHit], threshold: float) -> tuple[int, int]:
    kept = [h for h in hits if not h.governed or h.similarity >= threshold]
    return len(kept), sum(h.correct for h in kept)


def choose(tenant: str, judged: Sequence[JudgedHit], rule: Rule, current: float | None = None) -> Choice:
    """The lowest threshold in [floor, cap] whose served judged hits meet the target, or under the
    floor where explored near misses prove it too (see module). `current`: the tenant's learned
    threshold so far (kept when the evidence is too thin)."""
    hits = [h for h in judged if not h.explored]
    band = sorted((h for h in judged if h.explored and h.similarity < rule.floor),
                  key=lambda h: h.similarity)
    old = rule.floor if current is None else current
    kept_old, correct_old = _served(hits, old)
    old_bound = wilson_bounds(correct_old, kept_old, rule.z)[0]

    def result(status: Status, new: float, kept: int, correct: int,
               below: Sequence[JudgedHit] = ()) -> Choice:
        bound = wilson_bounds(correct, kept, rule.z)[0] if kept else 0.0
        return Choice(tenant, status, old, new, len(hits), kept, correct, bound, old_bound,
                      len(below), sum(h.correct for h in below))

    def meets(kept: int, correct: int) -> bool:
        return kept > 0 and wilson_bounds(correct, kept, rule.z)[0] >= rule.target

    if len(hits) < rule.min_judged:  # the global threshold, whatever was learned before
        kept, correct = _served(hits, rule.floor)
        return result("too_few", rule.floor, kept, correct)
    kept_floor, correct_floor = _served(hits, rule.floor)
    if meets(kept_floor, correct_floor):
        for i, near in enumerate(band):  # lowest first: [near, floor) explored and right enough
            below = band[i:]
            if meets(len(below), sum(h.correct for h in below)):
                return result("learned", near.similarity, kept_floor, correct_floor, below)
    candidates = sorted({rule.floor, rule.cap} | {
        h.similarity for h in hits if h.governed and rule.floor <= h.similarity <= rule.cap})
    for threshold in candidates:  # lowest first: the first that meets the target serves the most
        kept, correct = _served(hits, threshold)
        if meets(kept, correct):
            return result("learned", threshold, kept, correct)
    if wilson_bounds(correct_floor, kept_floor, rule.z)[1] < rule.target:
        return result("off", OFF, 0, 0)
    return result("kept", old, kept_old, correct_old)


def choose_all(hits: Iterable[JudgedHit], rule: Rule,
               current: Mapping[str, float] | None = None) -> list[Choice]:
    """One Choice per tenant with judged hits, tenants in name order."""
    by_tenant: dict[str, list[JudgedHit]] = {}
    for hit in hits:
        by_tenant.setdefault(hit.tenant, []).append(hit)
    current = current or {}
    return [choose(tenant, by_tenant[tenant], rule, current.get(tenant))
            for tenant in sorted(by_tenant)]
