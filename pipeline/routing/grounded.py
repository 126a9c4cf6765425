"""Train the shipped router on our own SLM's labelled outcomes:  python -m pipeline.routing.grounded

Data: pipeline/routing/data/slm_labels.jsonl.gz (`pointsman label slm`: our SLM right or wrong on the
MMLU train subjects and the GSM8K train half; the strong model's outcome is RouteLLM's GPT-4 label).
Label 1 where the strong model was right and our SLM wrong: sending that prompt to the SLM loses it.
Same two heads and features as the RouteLLM-label model (train.fit_gated). Each head's quality curve
(quality.QualityCurve) is fitted on out-of-fold scores: 5 folds, by subject for MMLU (the held-out
set is other subjects) and by prompt for GSM8K, so `POINTSMAN_QUALITY_TARGET` is calibrated on
prompts the scoring model never saw. Deterministic. `fit_outcomes` is also what
`pointsman train router --from-clickhouse` refits on judged production outcomes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from pipeline.routing.features import multiple_choice
from pipeline.routing.quality import QualityCurve
from pipeline.routing.scorer import HEADS, MODEL_FILE, GatedModel, routing_keys
from pipeline.routing.train import L2_CHOICE, L2_OPEN, fit_gated
from pipeline.semantic.embedders import Embedder, StaticEmbedder

FOLDS = 5
EXPONENTS = (0.0, 0.5)  # the routing key's cost exponent: none, or square root (scorer.routing_keys)


@dataclass(frozen=True)
class Outcome:
    """One labelled (or judged) prompt: what the router saw and how each track did on it."""

    text: str
    slm_ok: float  # 0/1, or a judge's score in [0, 1]
    strong_ok: float
    group: str  # prompts of one group share a fold (an MMLU subject, a tenant)


def outcomes_from_labels(rows: Sequence[dict]) -> list[Outcome]:
    from pipeline.eval.labelled import query_text

    return [Outcome(query_text(r["question"], r["choices"]), float(r["slm_correct"]),
                    1.0 if r["strong_correct"] in (True, None) else 0.0, r["group"]) for r in rows]


def folds_of(outcomes: Sequence[Outcome], folds: int = FOLDS) -> np.ndarray:
    """A group's prompts share a fold; a group that is the whole set (GSM8K) is split by prompt."""
    groups = {o.group for o in outcomes}
    by_prompt = len(groups) < folds
    keys = [o.text if by_prompt or o.group in ("gsm8k", "file") else o.group for o in outcomes]
    return np.array([xxhash.xxh32_intdigest(k.encode()) % folds for k in keys])


def fit_outcomes(outcomes: Sequence[Outcome], embedder: Embedder, l2_choice: float = L2_CHOICE,
                 l2_open: float = L2_OPEN) -> tuple[GatedModel, np.ndarray]:
    """The model on every outcome, with quality curves from out-of-fold scores (also returned)."""
    texts = [o.text for o in outcomes]
    vectors = embedder.embed(texts)
    slm = np.array([o.slm_ok for o in outcomes])
    strong = np.array([o.strong_ok for o in outcomes])
    y = (strong > slm).astype(np.float64)
    fold = folds_of(outcomes)
    oof = np.zeros(len(outcomes))
    for f in range(FOLDS):
        held = fold == f
        if held.any() and (~held).any():
            train_texts = [t for t, h in zip(texts, held, strict=True) if not h]
            model = fit_gated(train_texts, y[~held], vectors[~held], embedder.name, l2_choice, l2_open)
            oof[held] = model.score(vectors[held], [t for t, h in zip(texts, held, strict=True) if h])
    gate = np.array([multiple_choice(t) for t in texts], bool)
    exponent = best_cost_exponent(oof, texts, slm, strong, gate)
    keys = routing_keys(oof, texts, exponent)
    curves = {head: QualityCurve.fit(keys[mask], slm[mask], strong[mask])
              for head, mask in zip(HEADS, (gate, ~gate), strict=True)}
    final = fit_gated(texts, y, vectors, embedder.name, l2_choice, l2_open)
    return GatedModel(final.choice, final.open, final.quantiles, curves, exponent), oof


def prompt_lengths(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], np.float64)


def saved_length(keys: np.ndarray, length: np.ndarray, slm: np.ndarray, strong: np.ndarray,
                 mask: np.ndarray, target: float = 0.95) -> float:
    """Prompt length (a proxy for LLM cost) the head over `mask` sends to the SLM at `target`."""
    if not mask.any():
        return 0.0
    _, share, _ = QualityCurve.fit(keys[mask], slm[mask], strong[mask]).point_for(target)
    order = np.argsort(keys[mask], kind="stable")
    return float(length[mask][order][:round(share * mask.sum())].sum())


def best_cost_exponent(oof: np.ndarray, texts: Sequence[str], slm: np.ndarray, strong: np.ndarray,
                       gate: np.ndarray, target: float = 0.95) -> float:
    """The exponent (of EXPONENTS) whose out-of-fold ranking saves the most prompt length at
    `target` quality in each head."""
    length = prompt_lengths(texts)

    def saved(exponent: float) -> float:
        keys = routing_keys(oof, texts, exponent)
        return sum(saved_length(keys, length, slm, strong, mask, target) for mask in (gate, ~gate))

    return max(EXPONENTS, key=saved)  # the first on ties: 0, no weighting


def oof_cost_cuts(model: GatedModel, oof: np.ndarray, outcomes: Sequence[Outcome],
                  target: float = 0.95) -> dict[str, tuple[float, float]]:
    """Per head, (the router's, a perfect router's) cut of prompt length at `target` quality on
    out-of-fold scores: how much of the oracle's saving the learned ranking can reach, before any
    held-out run. The SLM is counted free; a perfect router knows both outcomes."""
    from pipeline.eval.pipeline_score import oracle_cost

    texts = [o.text for o in outcomes]
    slm = np.array([o.slm_ok for o in outcomes])
    strong = np.array([o.strong_ok for o in outcomes])
    gate = np.array([multiple_choice(t) for t in texts], bool)
    keys = routing_keys(oof, texts, model.cost_exponent)
    length = prompt_lengths(texts)
    cuts = {}
    for head, mask in zip(HEADS, (gate, ~gate), strict=True):
        if mask.any():
            total = length[mask].sum()
            ours = saved_length(keys, length, slm, strong, mask, target) / total
            free = np.zeros(int(mask.sum()))
            perfect = oracle_cost(slm[mask] >= 0.5, strong[mask] >= 0.5, free, length[mask], target)
            cuts[head] = (ours, 1.0 - perfect / total)
    return cuts


def main() -> None:
    from pipeline.eval.label_slm import LABELS_FILE, read_labels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS_FILE)
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    args = parser.parse_args()
    outcomes = outcomes_from_labels(read_labels(args.labels))
    model, oof = fit_outcomes(outcomes, StaticEmbedder())
    model.save(args.out)
    print(f"trained on {len(outcomes)} labelled outcomes of our SLM; wrote {args.out}")
    print(f"  routing key: score / length**{model.cost_exponent:g}")
    for head, curve in model.curves.items():
        threshold, share, ratio = curve.point_for(0.95)
        print(f"  {head} head: quality target 0.95 -> threshold {threshold:.3f}, "
              f"slm share {share:.1%} (quality {ratio:.1%} of all-LLM, out of fold)")
    for head, (ours, perfect) in oof_cost_cuts(model, oof, outcomes).items():
        print(f"  {head} head: prompt length cut at 0.95, out of fold: {ours:.1%}, a perfect router's "
              f"{perfect:.1%} ({ours / perfect:.0%} of it)" if perfect > 0 else f"  {head} head: no saving")


if __name__ == "__main__":
    main()
