"""Ranking metrics shared by the evaluations (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """P(score of a random positive > that of a random negative), ties half: Mann-Whitney U over
    average ranks. None when either class is empty (no pair to rank)."""
    s = np.asarray(scores, float)
    y = np.asarray(positives, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    sorted_s = s[order]
    # tied scores share the mean of the ranks they span
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start:start + count]] = start + (count + 1) / 2
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
