"""Cost per answer: token prices for remote models, CPU time for local ones."""

from __future__ import annotations

from dataclasses import dataclass, field

# USD per 1M tokens (prompt, completion); users override with POINTSMAN_LLM_PRICE
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    # the strong model of RouteLLM's labels, whose recorded answers `pointsman eval pipeline` replays
    "gpt-4-1106-preview": (10.00, 30.00),
}
FALLBACK_PRICE = (2.50, 10.00)


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    cpu_hour_usd: float = 0.04  # one vCPU-hour of a cloud instance, for local inference

    def price(self, model: str, configured: str = "") -> tuple[float, float]:
        """Exact name, else the longest known prefix (upstreams answer with dated names such as
        gpt-4o-mini-2024-07-18), else the model we asked for, else the fallback."""
        for name in (model, configured):
            if name in self.prices:
                return self.prices[name]
            prefixes = [k for k in self.prices if name.startswith(k)]
            if prefixes:
                return self.prices[max(prefixes, key=len)]
        return FALLBACK_PRICE

    def llm_cost(self, model: str, prompt_tokens: int, completion_tokens: int,
                 configured: str = "") -> float:
        prompt, completion = self.price(model, configured)
        return (prompt_tokens * prompt + completion_tokens * completion) / 1e6

    def cpu_cost(self, seconds: float, threads: int) -> float:
        return seconds * threads * self.cpu_hour_usd / 3600
