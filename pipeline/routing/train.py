"""Train the RouteLLM-label difficulty model in data/ (the baseline):  python -m pipeline.routing.train

Data: RouteLLM's per-prompt labels in shared/data/routellm (Mixtral-8x7B vs GPT-4); label 1 where
GPT-4 answered right and Mixtral wrong (the strong model was needed).
Train set (`train_prompts`): the MMLU subjects whose xxh32(subject) is even (`split`) and the GSM8K
prompts whose xxh32(prompt) is even (`gsm8k_split`, 669 of 1,307). Everything else is held out: the
other MMLU subjects, the other half of GSM8K and all of MT-Bench (see `pointsman eval router`).
Model (scorer.GatedModel): a multiple-choice head over [static embedding, the 12 base features]
fitted on the multiple-choice prompts (MMLU), L2 = 10; an open head over [static embedding, all 22
features] fitted on the other prompts (GSM8K), L2 = 3 (picked by 5-fold CV inside the GSM8K train
half, from 1 / 3 / 10 / 30). Deterministic.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from pipeline.eval.datasets import Prompt, routellm_prompts
from pipeline.routing.features import BASE_NAMES, multiple_choice, text_features
from pipeline.routing.scorer import ROUTELLM_MODEL_FILE, GatedModel, LogisticModel, fit_logistic
from pipeline.semantic.embedders import Embedder, StaticEmbedder

L2_CHOICE = 10.0
L2_OPEN = 3.0


def split(subject: str) -> str:
    """MMLU: whole subjects are train or test (held-out subjects test transfer to new topics)."""
    return "train" if xxhash.xxh32_intdigest(subject.encode()) % 2 == 0 else "test"


def gsm8k_split(text: str) -> str:
    """GSM8K: one subject, so prompts are split by a hash of their text."""
    return "train" if xxhash.xxh32_intdigest(text.encode()) % 2 == 0 else "test"


def held_out(prompt: Prompt) -> bool:
    """Never trained on by the shipped model."""
    if prompt.dataset == "mmlu":
        return split(prompt.group) == "test"
    if prompt.dataset == "gsm8k":
        return gsm8k_split(prompt.text) == "test"
    return True


def train_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    return [p for p in prompts if p.dataset in ("mmlu", "gsm8k") and not held_out(p)]


def strong_needed(prompts: Sequence[Prompt]) -> np.ndarray:
    return np.array([1.0 if p.strong_ok > p.weak_ok else 0.0 for p in prompts])


def fit_head(vectors: np.ndarray, feats: np.ndarray, y: np.ndarray, stats: np.ndarray, l2: float,
             embedder: str) -> LogisticModel:
    """One logistic head; `stats` = the feature rows whose mean / std standardise the features."""
    mean, std = stats.mean(axis=0).astype(np.float32), (stats.std(axis=0) + 1e-6).astype(np.float32)
    x = np.hstack([vectors, (feats - mean) / std]).astype(np.float32)
    w, b = fit_logistic(x, y, l2=l2)
    head = LogisticModel(w, b, mean, std, np.zeros(0), embedder)
    quantiles = np.quantile(head.predict(x), np.linspace(0, 1, 101)).astype(np.float32)
    return LogisticModel(w, b, mean, std, quantiles, embedder)


def fit_gated(texts: Sequence[str], y: np.ndarray, vectors: np.ndarray, embedder: str,
              l2_choice: float = L2_CHOICE, l2_open: float = L2_OPEN) -> GatedModel:
    """Both heads on `y` (1 = the strong model was needed), each on its own prompts."""
    gate = np.array([multiple_choice(t) for t in texts], bool)
    if gate.all() or not gate.any():
        raise ValueError("training needs both multiple-choice and open prompts")
    feats = np.stack([text_features(t) for t in texts])
    mc_feats = feats[gate, :len(BASE_NAMES)]
    choice = fit_head(vectors[gate], mc_feats, y[gate], mc_feats, l2_choice, embedder)
    open_ = fit_head(vectors[~gate], feats[~gate], y[~gate], feats, l2_open, embedder)
    model = GatedModel(choice, open_, np.zeros(0))
    quantiles = np.quantile(model.score(vectors, texts), np.linspace(0, 1, 101)).astype(np.float32)
    return GatedModel(choice, open_, quantiles)


def train(prompts: Sequence[Prompt], embedder: Embedder, l2_choice: float = L2_CHOICE,
          l2_open: float = L2_OPEN) -> GatedModel:
    """The RouteLLM-label model: the strong model needed where GPT-4 was right and Mixtral wrong."""
    texts = [p.text for p in prompts]
    return fit_gated(texts, strong_needed(prompts), embedder.embed(texts), embedder.name, l2_choice, l2_open)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l2-choice", type=float, default=L2_CHOICE)
    parser.add_argument("--l2-open", type=float, default=L2_OPEN)
    parser.add_argument("--out", type=Path, default=ROUTELLM_MODEL_FILE)
    args = parser.parse_args()
    prompts = train_prompts(routellm_prompts(("gsm8k", "mmlu")))
    model = train(prompts, StaticEmbedder(), args.l2_choice, args.l2_open)
    model.save(args.out)
    by_set = {d: sum(p.dataset == d for p in prompts) for d in ("mmlu", "gsm8k")}
    print(f"trained on {by_set['mmlu']} MMLU + {by_set['gsm8k']} GSM8K prompts "
          f"({int(strong_needed(prompts).sum())} strong-needed); wrote {args.out}")


if __name__ == "__main__":
    main()
