"""Learned difficulty score: logistic regression over [sentence embedding, cheap text features].

score(text) = P(the strong model is needed) in [0, 1]; the router sends a query to the LLM when
its score reaches the threshold. The shipped model has two heads, picked per prompt by its format
(features.multiple_choice): a multiple-choice head (trained on MMLU) and an open head (trained on
GSM8K word problems; it also scores chat). One dot product after the embedding: a few µs. Trained
by `python -m pipeline.routing.train` (IRLS in numpy, no scikit-learn); the file also carries the
score quantiles of its training prompts, so `--slm-share` can set a threshold with no traffic yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.routing.features import multiple_choice, text_features
from pipeline.routing.quality import QualityCurve
from pipeline.semantic.embedders import Embedder

DATA = Path(__file__).parent / "data"
MODEL_FILE = DATA / "difficulty_slm.npz"  # trained on our own SLM's labelled outcomes (the default)
ROUTELLM_MODEL_FILE = DATA / "difficulty_static.npz"  # trained on RouteLLM's Mixtral/GPT-4 labels
HEADS = ("choice", "open")


@dataclass(frozen=True)
class LogisticModel:
    weights: np.ndarray  # (dim,) over [embedding, standardised features]
    bias: float
    feat_mean: np.ndarray  # its length = how many of features.NAMES the model uses
    feat_std: np.ndarray
    quantiles: np.ndarray  # 101 score quantiles of the training prompts: calibration without traffic
    embedder: str  # the embedder it was trained over ("static")

    def design(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        n = len(self.feat_mean)
        feats = np.stack([text_features(t, n) for t in texts]) if texts else np.zeros((0, n))
        return np.hstack([vectors, (feats - self.feat_mean) / self.feat_std]).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))

    def score(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return self.predict(self.design(vectors, texts))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights.astype(np.float32), "bias": np.float32(self.bias),
                "feat_mean": self.feat_mean, "feat_std": self.feat_std, "quantiles": self.quantiles,
                "embedder": np.array(self.embedder)}

    def save(self, path: Path) -> None:
        np.savez(path, **self.arrays())

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "") -> LogisticModel:
        return cls(d[prefix + "weights"], float(d[prefix + "bias"]), d[prefix + "feat_mean"],
                   d[prefix + "feat_std"], d[prefix + "quantiles"], str(d[prefix + "embedder"]))

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> LogisticModel:
        return cls.from_arrays(np.load(path))


@dataclass(frozen=True)
class GatedModel:
    """Two heads: multiple-choice prompts -> `choice`, everything else -> `open`. `curves`: each
    head's quality curve on out-of-fold labelled outcomes, for a quality target (quality.py)."""

    choice: LogisticModel
    open: LogisticModel
    quantiles: np.ndarray  # of the gated scores over all training prompts
    curves: Mapping[str, QualityCurve] = field(default_factory=dict)
    # quality mode ranks by score / length**cost_exponent: likely loss per (roughly) dollar saved,
    # so of two equally risky prompts the longer, costlier one goes to the SLM first
    cost_exponent: float = 0.0

    @property
    def embedder(self) -> str:
        return self.choice.embedder

    @staticmethod
    def head_of(text: str) -> str:
        return "choice" if multiple_choice(text) else "open"

    def routing_keys(self, scores: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """What the quality curves' thresholds compare: the score per cost weight of the prompt."""
        return routing_keys(scores, texts, self.cost_exponent)

    def score(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        gate = np.array([multiple_choice(t) for t in texts], bool)
        out = np.zeros(len(texts))
        for head, mask in ((self.choice, gate), (self.open, ~gate)):
            if mask.any():
                out[mask] = head.score(vectors[mask], [t for t, m in zip(texts, mask, strict=True) if m])
        return out

    def save(self, path: Path) -> None:
        arrays = {f"{name}__{k}": v for name in HEADS for k, v in getattr(self, name).arrays().items()}
        for name, curve in self.curves.items():
            arrays |= curve.arrays(f"{name}__")
        np.savez(path, quantiles=self.quantiles, cost_exponent=np.float32(self.cost_exponent), **arrays)


def load_model(path: Path = MODEL_FILE) -> LogisticModel | GatedModel:
    d = np.load(path)
    if "choice__weights" not in d:
        return LogisticModel.from_arrays(d)
    choice, open_ = (LogisticModel.from_arrays(d, f"{name}__") for name in HEADS)
    curves = {name: c for name in HEADS if (c := QualityCurve.from_arrays(d, f"{name}__")) is not None}
    exponent = float(d["cost_exponent"]) if "cost_exponent" in d else 0.0
    return GatedModel(choice, open_, d["quantiles"], curves, exponent)


def routing_keys(scores: np.ndarray, texts: Sequence[str], exponent: float) -> np.ndarray:
    if exponent == 0.0:
        return np.asarray(scores, np.float64)
    weight = np.array([max(len(t), 1) / 1000.0 for t in texts]) ** exponent  # prompt length ~ cost
    return np.asarray(scores, np.float64) / weight


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 12,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (IRLS); the bias is not penalised."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    sw = np.ones(n) if sample_weight is None else sample_weight
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (sw * (p - y)) + reg * w
        hess = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        w -= np.linalg.solve(hess, grad)
    return w[:-1].astype(np.float32), float(w[-1])


class DifficultyScorer:
    """Embeds (or reuses an embedding) and scores; one interface: `score(texts) -> (n,) floats`."""

    def __init__(self, embedder: Embedder, model: LogisticModel | GatedModel | None = None) -> None:
        self.model = model or load_model()
        if embedder.name != self.model.embedder:
            raise ValueError(f"model trained over {self.model.embedder!r}, embedder is {embedder.name!r}")
        self.embedder = embedder

    def score(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> np.ndarray:
        vecs = self.embedder.embed(texts) if vectors is None else vectors
        return self.model.score(vecs, texts)

    def quality_thresholds(self, target: float) -> dict[str, float]:
        """Each head's threshold keeping `target` of all-LLM quality on its labelled outcomes."""
        curves = getattr(self.model, "curves", {})
        if set(curves) != set(HEADS):
            raise ValueError("this routing model has no quality curves (train it on labelled outcomes: "
                             "python -m pipeline.routing.train)")
        return {head: curves[head].threshold_for(target) for head in HEADS}

    def threshold_for_share(self, slm_share: float) -> float:
        """Threshold sending `slm_share` of the training prompts' distribution to the SLM."""
        q = self.model.quantiles
        return float(np.interp(slm_share, np.linspace(0, 1, len(q)), q))
