"""`pointsman eval router`: the router's quality / cost curve on RouteLLM's labelled prompts.

For a router score s (higher: more likely to need the strong model) and every share c of calls
sent to the strong model (the top-c scores), quality = mean over prompts of the chosen model's
score. Reported per held-out set, next to RouteLLM's published figures for the same model pair:
  cost cut @95%  1 - the smallest strong share whose quality reaches 95% of all-strong quality
  CPT(50/80%)    the strong share needed to recover 50/80% of the weak-to-strong quality gap
  APGR           average performance gap recovered over all shares (area under the PGR curve)
  95% CI         bootstrap interval of the cost cut (prompts resampled, router scores fixed)
Held-out sets: the "test" MMLU subjects, the "test" half of GSM8K (xxh32 of the prompt odd) and all
of MT-Bench; the shipped model trained on the "train" MMLU subjects + the "train" GSM8K half only
(pipeline.routing.train.train_prompts). Routers: learned (the shipped model), learned-5fold
(retrained per fold on those + 4/5 of the set, scored on the held-out fifth: what a deployment
gains from a few labels of its own traffic), length (the baseline: longer prompt -> strong),
random (the diagonal, analytic) and oracle (upper bound). RouteLLM's own script reads its curve at
10 score deciles and interpolates linearly; this one steps every 1% of prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.eval.datasets import ROUTELLM_DIR, Prompt, routellm_prompts
from pipeline.routing.scorer import ROUTELLM_MODEL_FILE, DifficultyScorer, load_model
from pipeline.routing.train import held_out, train, train_prompts
from pipeline.semantic.embedders import StaticEmbedder
from pipeline.semantic.index import limit_blas_threads

PUBLISHED_COST_CUT = {"gsm8k": 0.35, "mmlu": 0.45, "mt_bench": 0.85}  # RouteLLM README, same pair


def curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, steps: int = 101) -> np.ndarray:
    """Quality at strong shares 0, 1/(steps-1), ..., 1 (ties broken by order: deterministic)."""
    order = np.argsort(-scores, kind="stable")
    gain = (strong - weak)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    counts = np.round(np.linspace(0, 1, steps) * len(scores)).astype(int)
    return (weak.sum() + cum[counts]) / len(scores)


def summarise(q: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    shares = np.linspace(0, 1, len(q))
    qs, qw = float(strong.mean()), float(weak.mean())
    pgr = (q - qw) / (qs - qw) if qs > qw else np.ones_like(q)
    def first(mask: np.ndarray) -> float:
        return float(shares[np.argmax(mask)]) if mask.any() else 1.0
    return {"weak": qw, "strong": qs, "cost_cut_at_95": 1.0 - first(q >= 0.95 * qs),
            "cpt50": first(pgr >= 0.5), "cpt80": first(pgr >= 0.8), "apgr": float(np.mean(pgr))}


def cost_cut_interval(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, rounds: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the cost cut @95%: prompts resampled with their scores."""
    rng = np.random.default_rng(seed)
    cuts = []
    for _ in range(rounds):
        i = rng.integers(0, len(scores), len(scores))
        cuts.append(summarise(curve(scores[i], weak[i], strong[i]), weak[i], strong[i])["cost_cut_at_95"])
    low, high = np.percentile(cuts, [2.5, 97.5])
    return float(low), float(high)


def evaluate(sets: dict[str, Sequence[Prompt]], routers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prompts in sets.items():
        weak = np.array([p.weak_ok for p in prompts])
        strong = np.array([p.strong_ok for p in prompts])
        texts = [p.text for p in prompts]
        row: dict[str, Any] = {"prompts": len(prompts),
                               "published_cost_cut_at_95": PUBLISHED_COST_CUT.get(name)}
        for rname, score in routers.items():
            scores = np.asarray(score(texts, prompts), float)
            row[rname] = summarise(curve(scores, weak, strong), weak, strong)
            row[rname]["cost_cut_ci"] = cost_cut_interval(scores, weak, strong)
        row["random"] = summarise(np.linspace(weak.mean(), strong.mean(), 101), weak, strong)
        out[name] = row
    return out


def kfold_scores(prompts: Sequence[Prompt], base: Sequence[Prompt], embedder: StaticEmbedder,
                 folds: int = 5) -> np.ndarray:
    """Each prompt scored by a model that never saw it: trained on `base` + the other folds."""
    fold = np.arange(len(prompts)) % folds
    scores = np.zeros(len(prompts))
    for f in range(folds):
        rest = [p for p, g in zip(prompts, fold, strict=True) if g != f]
        held = [p.text for p, g in zip(prompts, fold, strict=True) if g == f]
        scores[fold == f] = DifficultyScorer(embedder, train([*base, *rest], embedder)).score(held)
    return scores


def interval(ci: tuple[float, float] | None) -> str:
    return f"{ci[0]:.0%}-{ci[1]:.0%}" if ci is not None else ""


def run_eval_router(console: Console, *, as_json: bool = False, retrain: bool = False,
                    data_dir: Path = ROUTELLM_DIR) -> int:
    limit_blas_threads(1)  # as the router runs: one BLAS thread per process
    if not (data_dir / "gsm8k_responses.csv").exists():
        console.print(f"no RouteLLM labels in {data_dir}")
        return 1
    prompts = routellm_prompts(root=data_dir)
    embedder = StaticEmbedder()
    base = train_prompts(prompts)
    model = train(base, embedder) if retrain else load_model(ROUTELLM_MODEL_FILE)
    scorer = DifficultyScorer(embedder, model)
    sets = {name: [p for p in prompts if p.dataset == name and held_out(p)]
            for name in ("gsm8k", "mmlu", "mt_bench")}
    routers = {
        "learned": lambda texts, _: scorer.score(texts),
        "learned-5fold": lambda _, ps: kfold_scores(ps, base, embedder),
        "length": lambda texts, _: np.array([len(t) for t in texts], float),
        "oracle": lambda _, ps: np.array([p.strong_ok - p.weak_ok for p in ps]),
    }
    report = {"train": "learned: MMLU subjects with split()=='train' + GSM8K prompts with gsm8k_split()=="
                       "'train' only; learned-5fold: those + the other 4 folds of the evaluated set",
              "sets": evaluate(sets, routers)}
    if as_json:
        print(json.dumps(report, indent=1))
        return 0
    table = Table(title="Router quality/cost on held-out sets (strong = GPT-4, weak = Mixtral-8x7B)")
    for col in ("set", "router", "weak / strong", "cost cut @95%", "95% CI", "published", "CPT(50%)",
                "CPT(80%)", "APGR"):
        table.add_column(col)
    for name, row in report["sets"].items():
        for rname in ("learned", "learned-5fold", "length", "random", "oracle"):
            r = row[rname]
            pub = row["published_cost_cut_at_95"]
            table.add_row(f"{name} ({row['prompts']})", rname, f"{r['weak']:.3f} / {r['strong']:.3f}",
                          f"{r['cost_cut_at_95']:.0%}", interval(r.get("cost_cut_ci")),
                          f"{pub:.0%}" if pub is not None else "",
                          f"{r['cpt50']:.0%}", f"{r['cpt80']:.0%}", f"{r['apgr']:.3f}")
    console.print(table)
    return 0
