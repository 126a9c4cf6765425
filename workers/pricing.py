"""Cost per answer: token prices for remote models, CPU time for local ones, and the all-LLM
counterfactual each answer is compared with.

The counterfactual of a query is the configured LLM's price for its prompt and an answer of the
length we saw: when the LLM answered, its own token counts (the all-LLM path would have made the
very same call); when the SLM answered, the SLM's counts. The SLM's prompt count comes from its
own tokenizer over the same chat messages and chat template: not the LLM's tokenizer, so an
estimate, but the only count there is without calling the LLM (and chat templates add a similar
few tokens per message on both sides). Its completion count stands in for the LLM's: the length
of answer the question took, capped by the same max_tokens; it errs low where an LLM would have
been wordier. Only a call that failed with no tokens at all has a counterfactual of 0 (unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def all_llm_cost(self, llm_model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The counterfactual: what `llm_model` (the first upstream's) would charge for a prompt
        and an answer of these lengths (see the module docstring for which counts are used)."""
        return self.llm_cost(llm_model, prompt_tokens, completion_tokens)


def apportion(total: float, weights: Sequence[int]) -> list[float]:
    """`total` split in proportion to `weights` (each micro-batch member's prompt + completion
    tokens: its share of the work); evenly when no member has a weight, so nothing is lost."""
    clean = [max(0, w) for w in weights]
    whole = sum(clean)
    if whole == 0:
        return [total / len(clean)] * len(clean) if clean else []
    return [total * w / whole for w in clean]
