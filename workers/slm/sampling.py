"""Token choice: greedy, or temperature + nucleus (top-p) sampling from a seeded generator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def per_row(value: T | Sequence[T], n: int, name: str) -> list[T]:
    """A scalar applies to every prompt; a sequence gives one value per prompt."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value] * n  # type: ignore[list-item]
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} values for {n} prompts")
    return list(value)


def sample(logits: np.ndarray, params: Sampling, rng: np.random.Generator) -> int:
    """Draw one token id from logits (or log-probabilities) [vocab]."""
    if params.greedy:
        return int(logits.argmax())
    scaled = logits.astype(np.float64) / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        # the smallest prefix whose mass reaches top_p; the top token always stays
        keep = order[: int(np.searchsorted(cum, params.top_p)) + 1]
        kept = probs[keep] / probs[keep].sum()
        return int(keep[rng.choice(len(keep), p=kept)])
    return int(rng.choice(len(probs), p=probs))


class StopMatcher:
    """Finds stop strings in generated text; looks only at the newest tokens each step."""

    def __init__(self, stops: Sequence[str], decode: object) -> None:
        self.stops = [s for s in stops if s]
        self._decode = decode
        # a stop of c chars spans at most 4c byte-level tokens (+1 for a straddling token)
        self._window = 4 * max((len(s) for s in self.stops), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.stops)

    def hit(self, tokens: list[int]) -> bool:
        tail = self._decode(tokens[-self._window :])  # type: ignore[operator]
        return any(s in tail for s in self.stops)

    def cut(self, text: str) -> tuple[str, bool]:
        """Text up to the earliest stop string, and whether one was found."""
        found = [i for s in self.stops if (i := text.find(s)) >= 0]
        return (text[: min(found)], True) if found else (text, False)
