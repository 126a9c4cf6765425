"""Train the difficulty model shipped in data/:  python -m pipeline.routing.train

Data: RouteLLM's per-prompt labels in shared/data/routellm (Mixtral-8x7B vs GPT-4).
Train set: MMLU subjects whose xxh32(subject) is even (`split(subject) == "train"`), label 1 where
GPT-4 answered right and Mixtral wrong (the strong model was needed). Everything else is held
out: the other MMLU subjects, all of GSM8K and all of MT-Bench (see `pointsman eval router`).
Features: the static embedding (pipeline/semantic, dim 128) + pipeline/routing/features.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from pipeline.eval.datasets import Prompt, routellm_prompts
from pipeline.routing.features import text_features
from pipeline.routing.scorer import MODEL_FILE, LogisticModel, fit_logistic
from pipeline.semantic.embedders import Embedder, StaticEmbedder


def split(subject: str) -> str:
    return "train" if xxhash.xxh32_intdigest(subject.encode()) % 2 == 0 else "test"


def train_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    return [p for p in prompts if p.dataset == "mmlu" and split(p.group) == "train"]


def strong_needed(prompts: Sequence[Prompt]) -> np.ndarray:
    return np.array([1.0 if p.strong_ok > p.weak_ok else 0.0 for p in prompts])


def train(prompts: Sequence[Prompt], embedder: Embedder, l2: float = 10.0) -> LogisticModel:
    texts = [p.text for p in prompts]
    feats = np.stack([text_features(t) for t in texts])
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    stub = LogisticModel(np.zeros(0), 0.0, mean, std, np.zeros(0), embedder.name)
    x = stub.design(embedder.embed(texts), texts)
    w, b = fit_logistic(x, strong_needed(prompts), l2=l2)
    model = LogisticModel(w, b, mean.astype(np.float32), std.astype(np.float32), np.zeros(0), embedder.name)
    quantiles = np.quantile(model.predict(x), np.linspace(0, 1, 101)).astype(np.float32)
    return LogisticModel(w, b, model.feat_mean, model.feat_std, quantiles, embedder.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l2", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    args = parser.parse_args()
    prompts = train_prompts(routellm_prompts(("mmlu",)))
    model = train(prompts, StaticEmbedder(), l2=args.l2)
    model.save(args.out)
    print(f"trained on {len(prompts)} MMLU prompts ({int(strong_needed(prompts).sum())} strong-needed); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
