"""Quality-target calibration: the threshold that keeps a share of all-LLM quality, by labelled outcomes.

From prompts scored by a model that never saw them (out of fold), each with whether the SLM and the
strong model answered it right: sending the k lowest-scored prompts to the SLM gives quality
(sum slm_ok[:k] + sum strong_ok[k:]) / n. `QualityCurve` keeps that quality, as a ratio to
all-LLM quality, at a grid of k; `threshold_for(target)` picks the largest SLM share whose ratio
reaches the target, and the share follows from it. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 201  # points kept per curve: every 0.5% of the calibration prompts


@dataclass(frozen=True)
class QualityCurve:
    thresholds: np.ndarray  # ascending: a prompt scoring below thresholds[i] goes to the SLM
    slm_share: np.ndarray  # share of the calibration prompts below each threshold
    quality_ratio: np.ndarray  # routed quality / all-LLM quality at each threshold

    @classmethod
    def fit(cls, scores: np.ndarray, slm_ok: np.ndarray, strong_ok: np.ndarray,
            grid: int = GRID) -> QualityCurve:
        order = np.argsort(scores, kind="stable")
        s, weak, strong = (np.asarray(a, np.float64)[order] for a in (scores, slm_ok, strong_ok))
        n = len(s)
        if n == 0:
            raise ValueError("a quality curve needs labelled prompts")
        k = np.unique(np.round(np.linspace(0, n, grid)).astype(int))
        quality = (np.concatenate([[0.0], np.cumsum(weak)])[k]
                   + strong.sum() - np.concatenate([[0.0], np.cumsum(strong)])[k]) / n
        all_llm = strong.mean()
        ratio = quality / all_llm if all_llm > 0 else np.ones_like(quality)
        # threshold between the k-th and (k+1)-th lowest score: exactly k prompts fall below it
        padded = np.concatenate([[s[0] - 1e-6], s, [np.inf]])
        thresholds = np.where(k == n, np.inf, (padded[k] + padded[k + 1]) / 2)
        thresholds[k == 0] = s[0] - 1e-6
        return cls(thresholds.astype(np.float64), (k / n).astype(np.float64), ratio.astype(np.float64))

    def point_for(self, target: float) -> tuple[float, float, float]:
        """(threshold, slm share, quality ratio) of the largest share whose ratio reaches `target`."""
        if not 0.0 < target <= 1.0:
            raise ValueError(f"quality target must be in (0, 1], got {target}")
        ok = np.flatnonzero(self.quality_ratio >= target - 1e-12)
        i = int(ok[-1]) if ok.size else 0  # nothing reaches it: send everything to the LLM
        return float(self.thresholds[i]), float(self.slm_share[i]), float(self.quality_ratio[i])

    def threshold_for(self, target: float) -> float:
        return self.point_for(target)[0]

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}curve_thresholds": self.thresholds, f"{prefix}curve_share": self.slm_share,
                f"{prefix}curve_quality": self.quality_ratio}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str) -> QualityCurve | None:
        if f"{prefix}curve_thresholds" not in d:
            return None
        return cls(np.asarray(d[f"{prefix}curve_thresholds"]), np.asarray(d[f"{prefix}curve_share"]),
                   np.asarray(d[f"{prefix}curve_quality"]))
