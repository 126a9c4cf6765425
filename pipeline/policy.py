"""Routing policies: pure functions from a query to a track. A later issue adds learned ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from topics.schemas import Query, Track


@dataclass(frozen=True)
class Decision:
    track: Track
    reason: str


class Policy(Protocol):
    name: str

    def decide(self, query: Query) -> Decision: ...


@dataclass(frozen=True)
class BaselineLengthPolicy:
    """Short prompts with short answers go to the SLM; everything else to the LLM."""

    max_prompt_chars: int = 400
    max_answer_tokens: int = 256
    name: str = "baseline-length"

    def decide(self, query: Query) -> Decision:
        chars = sum(len(m.content) for m in query.chat())
        if chars <= self.max_prompt_chars and query.max_tokens <= self.max_answer_tokens:
            return Decision("slm", f"{self.name}: {chars} chars <= {self.max_prompt_chars}")
        return Decision("llm", f"{self.name}: {chars} chars or {query.max_tokens} tokens over limit")


@dataclass(frozen=True)
class FixedPolicy:
    """Every query to one track (tests, and tenants that opt out of routing)."""

    track: Track
    name: str = "fixed"

    def decide(self, query: Query) -> Decision:
        return Decision(self.track, f"{self.name}: always {self.track}")


def make_policy(name: str) -> Policy:
    if name == "baseline-length":
        return BaselineLengthPolicy()
    if name in ("always-slm", "always-llm"):
        return FixedPolicy(name.removeprefix("always-"), name=name)  # type: ignore[arg-type]
    raise ValueError(f"unknown routing policy {name!r}: baseline-length, always-slm, always-llm")
