"""Refit the router on judged production outcomes, and compare old and new on ones neither saw.

A judged outcome is an SLM-answered (or cache-served) query whose shadow LLM answer a judge scored:
slm_ok = the judge's agreement score, strong_ok = 1 (the LLM answer is the reference). The new
model is fitted on the shipped labels plus the judged outcomes outside the holdout (a hash of the
query id picks `holdout` of them), so a few hundred judgements shift it without forgetting the rest.
Both models are then scored on the held-out judgements: AUC of the score for "the SLM answer
disagreed" and, at the quality target, the SLM share and quality each would have kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from pipeline.eval.metrics import auc
from pipeline.routing.grounded import Outcome, fit_outcomes
from pipeline.routing.scorer import GatedModel
from pipeline.semantic.embedders import Embedder


@dataclass(frozen=True)
class Judged:
    query_id: str
    outcome: Outcome


def held_out(query_id: str, holdout: float) -> bool:
    return xxhash.xxh32_intdigest(query_id.encode()) % 1000 < holdout * 1000


def metrics(model: GatedModel, embedder: Embedder, outcomes: Sequence[Outcome],
            target: float) -> dict[str, Any]:
    texts = [o.text for o in outcomes]
    scores = model.score(embedder.embed(texts), texts)
    slm = np.array([o.slm_ok for o in outcomes])
    failed = slm < 0.5
    heads = np.array([model.head_of(t) for t in texts])
    thresholds = ({h: c.threshold_for(target) for h, c in model.curves.items()} if model.curves else {})
    to_slm = np.array([s < thresholds.get(h, -np.inf) for s, h in zip(scores, heads, strict=True)], bool)
    # kept quality: the SLM's score where the model keeps the query on the SLM, the LLM's (1) elsewhere
    kept = float(np.where(to_slm, slm, 1.0).mean()) if len(outcomes) else 1.0
    return {"judged": len(outcomes), "auc_disagreement": auc(scores, failed),
            "slm_share_at_target": float(to_slm.mean()) if len(outcomes) else 0.0, "quality_at_target": kept}


def refit(labels: Sequence[Outcome], judged: Sequence[Judged], old: GatedModel, embedder: Embedder, *,
          target: float = 0.95, holdout: float = 0.2) -> tuple[GatedModel, dict[str, Any]]:
    test = [j.outcome for j in judged if held_out(j.query_id, holdout)]
    train = [j.outcome for j in judged if not held_out(j.query_id, holdout)]
    new, _ = fit_outcomes([*labels, *train], embedder)
    report = {"labels": len(labels), "judged_train": len(train), "judged_holdout": len(test),
              "quality_target": target}
    if test:
        report["old"] = metrics(old, embedder, test, target)
        report["new"] = metrics(new, embedder, test, target)
    return new, report
