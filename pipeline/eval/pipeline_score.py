"""What `pointsman eval pipeline` computes from its results: pure, no broker, no database.

Each prompt is asked three times, under three tenants: routed by the policy, forced to the SLM,
forced to the LLM. The forced tenants give, per prompt, whether each track was right and what it
cost; the policy tenant gives what the router made of it.
  quality           mean correctness of the policy tenant's answers (a missing answer is wrong)
  oracle_cost_cut   1 - (cost of a perfect router) / (all-LLM cost). The perfect router knows both
                    outcomes and both costs of every prompt: it takes the right track (the cheaper
                    one when both or neither are right, which is the SLM whenever it costs less),
                    then spends the slack down to `slack` x all-LLM quality on giving up right
                    answers for the cheaper wrong track, greatest saving first (each gives up one
                    right answer, so greedy by saving is optimal).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from pipeline.eval.labelled import LabelledPrompt, is_correct

ARMS = ("policy", "slm", "llm")  # the three tenants each prompt is sent under
QUALITY_SLACK = 0.95  # the oracle keeps at least this share of all-LLM quality


def _order(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode())


def sample(prompts: Iterable[LabelledPrompt], limit: int | None) -> list[LabelledPrompt]:
    """Distinct prompts (a repeated text would be answered by the exact cache), at most `limit`:
    round robin over the groups (MMLU subjects), each group in the order of a hash of the text.
    Deterministic, and any N spans as many subjects as it can."""
    seen: set[str] = set()
    groups: dict[str, list[LabelledPrompt]] = {}
    for prompt in prompts:
        if prompt.text not in seen:
            seen.add(prompt.text)
            groups.setdefault(prompt.group, []).append(prompt)
    by_name = sorted(groups.items(), key=lambda item: _order(item[0]))
    queues = [sorted(g, key=lambda p: _order(p.text)) for _, g in by_name]
    total = sum(len(q) for q in queues)
    want = total if limit is None else min(limit, total)
    out: list[LabelledPrompt] = []
    depth = 0
    while len(out) < want:
        for queue in queues:
            if depth < len(queue) and len(out) < want:
                out.append(queue[depth])
        depth += 1
    return out


@dataclass(frozen=True)
class Answered:
    """One result row as the eval reads it back."""

    route: str
    answer: str
    cost_usd: float
    error: str = ""


@dataclass(frozen=True)
class Outcome:
    """One prompt's three answers, scored."""

    prompt: LabelledPrompt
    policy: Answered | None
    slm: Answered | None
    llm: Answered | None

    def ok(self, arm: str) -> bool:
        got: Answered | None = getattr(self, arm)
        return got is not None and not got.error and is_correct(self.prompt, got.answer)

    def cost(self, arm: str) -> float:
        got: Answered | None = getattr(self, arm)
        return got.cost_usd if got is not None else 0.0


def oracle_cost(slm_ok: Sequence[bool], llm_ok: Sequence[bool], slm_cost: Sequence[float],
                llm_cost: Sequence[float], slack: float = QUALITY_SLACK) -> float:
    """The cost of the perfect router at quality >= slack x all-LLM quality (see the module doc)."""
    floor = slack * sum(llm_ok)  # in right answers, not a mean: no rounding at the boundary
    right, cost, give_ups = 0, 0.0, []
    for s_ok, l_ok, s_cost, l_cost in zip(slm_ok, llm_ok, slm_cost, llm_cost, strict=True):
        if s_ok == l_ok:
            right += s_ok
            cost += min(s_cost, l_cost)
            continue
        kept, other = (s_cost, l_cost) if s_ok else (l_cost, s_cost)
        right += 1
        cost += kept
        if other < kept:
            give_ups.append(kept - other)
    for saving in sorted(give_ups, reverse=True):
        if right - 1 < floor - 1e-9:
            break
        right -= 1
        cost -= saving
    return cost


def cost_cut(cost: float, all_llm_cost: float) -> float:
    return 1.0 - cost / all_llm_cost if all_llm_cost > 0 else 0.0


def curve(scores: Sequence[float], outcomes: Sequence[Outcome], steps: int = 11) -> list[dict[str, float]]:
    """Routing alone by the policy's scores (lowest scores to the SLM), at SLM shares 0 .. 1:
    each prompt takes its forced tenant's answer and cost. Escalation is not in it."""
    if not outcomes:
        return []
    order = np.argsort(np.asarray(scores, np.float64), kind="stable")
    all_llm = sum(o.cost("llm") for o in outcomes)
    points = []
    for i in range(steps):
        share = i / (steps - 1)
        to_slm = set(order[: round(share * len(outcomes))].tolist())
        arms = ["slm" if j in to_slm else "llm" for j in range(len(outcomes))]
        quality = float(np.mean([o.ok(a) for o, a in zip(outcomes, arms, strict=True)]))
        cost = sum(o.cost(a) for o, a in zip(outcomes, arms, strict=True))
        points.append({"slm_share": round(share, 3), "quality": quality,
                       "cost_cut": cost_cut(cost, all_llm)})
    return points


def summary(name: str, outcomes: Sequence[Outcome]) -> dict[str, object]:
    """Every number of the report, from this run's answers."""
    n = len(outcomes)

    def mean(values: Iterable[bool]) -> float:
        values = list(values)
        return float(np.mean(values)) if values else 0.0

    policy = [o.policy for o in outcomes]
    by_route: dict[str, list[bool]] = {}
    for o in outcomes:
        route = o.policy.route if o.policy is not None else "missing"
        by_route.setdefault(route, []).append(o.ok("policy"))
    all_llm_cost = sum(o.cost("llm") for o in outcomes)
    oracle = oracle_cost([o.ok("slm") for o in outcomes], [o.ok("llm") for o in outcomes],
                         [o.cost("slm") for o in outcomes], [o.cost("llm") for o in outcomes])
    cost = sum(o.cost("policy") for o in outcomes)
    return {
        "set": name,
        "prompts": n,
        "slm_share": mean(p is not None and p.route == "slm" for p in policy),
        "escalated": sum(p is not None and p.route == "escalated" for p in policy),
        "quality": mean(o.ok("policy") for o in outcomes),
        "all_llm_quality": mean(o.ok("llm") for o in outcomes),
        "all_slm_quality": mean(o.ok("slm") for o in outcomes),
        "cost_usd": cost,
        "all_llm_cost_usd": all_llm_cost,
        "all_slm_cost_usd": sum(o.cost("slm") for o in outcomes),
        "all_slm_cost_cut": cost_cut(sum(o.cost("slm") for o in outcomes), all_llm_cost),
        "cost_cut": cost_cut(cost, all_llm_cost),
        "oracle_cost_usd": oracle,
        "oracle_cost_cut": cost_cut(oracle, all_llm_cost),
        "quality_by_route": {route: {"queries": len(oks), "quality": mean(oks)}
                             for route, oks in sorted(by_route.items())},
        "errors": {arm: sum(getattr(o, arm) is not None and bool(getattr(o, arm).error) for o in outcomes)
                   for arm in ARMS},
        "missing": {arm: sum(getattr(o, arm) is None for o in outcomes) for arm in ARMS},
    }
