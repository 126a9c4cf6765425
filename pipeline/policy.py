"""Routing policies: pure functions from a query to a track. A later issue adds learned ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from topics.schemas import Query, Track


@dataclass(frozen=True)
class Decision:
    """A track and why: `reason` in words, and the same as columns for analysts: the policy that
    decided, the score it computed and the threshold it compared with (None where it compared
    none: a fixed track, a tenant forced to one)."""

    track: Track
    reason: str
    escalate: bool = True  # False: the SLM answers itself, never hands the query on
    policy: str = ""
    score: float | None = None
    threshold: float | None = None


class Policy(Protocol):
    """`vector`: the query's fast embedding when the router already has it (learned policies)."""

    name: str

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision: ...


@dataclass(frozen=True)
class BaselineLengthPolicy:
    """Short prompts with short answers go to the SLM; everything else to the LLM."""

    max_prompt_chars: int = 400
    max_answer_tokens: int = 256
    name: str = "baseline-length"

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision:
        chars = sum(len(m.content) for m in query.chat())
        # the score: the prompt or the answer budget, whichever is nearer its limit, as a share
        # of that limit; over 1 (either past its limit) goes to the LLM
        score = max(chars / self.max_prompt_chars, query.max_tokens / self.max_answer_tokens)
        if score <= 1.0:
            return Decision("slm", f"{self.name}: {chars} chars <= {self.max_prompt_chars}",
                            policy=self.name, score=score, threshold=1.0)
        return Decision("llm", f"{self.name}: {chars} chars or {query.max_tokens} tokens over limit",
                        policy=self.name, score=score, threshold=1.0)


@dataclass(frozen=True)
class FixedPolicy:
    """Every query to one track (tests, and tenants that opt out of routing)."""

    track: Track
    name: str = "fixed"

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision:
        return Decision(self.track, f"{self.name}: always {self.track}", policy=self.name)


FORCED = "tenant-forced"  # the policy column of a tenant forced to a track: nothing was scored


@dataclass(frozen=True)
class TenantForced:
    """Tenants forced to one track, in front of any policy (POINTSMAN_TENANT_ROUTES=vip=llm,b=slm).
    A tenant forced to the SLM gets the SLM's own answers: it is never escalated."""

    inner: Policy
    forced: Mapping[str, Track]

    @property
    def name(self) -> str:
        return self.inner.name

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision:
        track = self.forced.get(query.tenant)
        if track is None:
            return self.inner.decide(query, vector)
        return Decision(track, f"{self.name}: tenant {query.tenant} forced to {track}",
                        escalate=track != "slm", policy=FORCED)


@dataclass(frozen=True)
class PolicyOptions:
    slm_share: float = 0.8  # learned: calibrate the threshold so this share goes to the SLM
    threshold: float | None = None  # learned: a fixed threshold instead
    tenant_routes: str = ""  # "vip=llm,cheap=0.9": force a track or a tenant's own threshold
    ab_salt: str = "ab1"  # a new salt reshuffles which users land in which arm
    quality_target: float | None = None  # learned: keep this share of all-LLM quality (labelled outcomes)
    model_file: str = ""  # learned: routing model file, watched (the shipped one until it exists)


def make_policy(name: str, options: PolicyOptions | None = None) -> Policy:
    """The named policy, behind the tenants that POINTSMAN_TENANT_ROUTES forces to a track."""
    options = options or PolicyOptions()
    policy = _named_policy(name, options)
    if not options.tenant_routes:
        return policy
    from pipeline.routing.policy import parse_overrides

    forced = {tenant: o.track for tenant, o in parse_overrides(options.tenant_routes).items()
              if o.track is not None}
    return TenantForced(policy, forced) if forced else policy


def _named_policy(name: str, options: PolicyOptions) -> Policy:
    if name == "baseline-length":
        return BaselineLengthPolicy()
    if name in ("always-slm", "always-llm"):
        return FixedPolicy(name.removeprefix("always-"), name=name)  # type: ignore[arg-type]
    if name.startswith("ab:"):  # "ab:baseline-length=0.5,learned=0.5": sticky split by user
        from pipeline.routing.policy import ABSplit

        arms = [arm.partition("=") for arm in name.removeprefix("ab:").split(",")]
        return ABSplit(tuple((arm, float(weight), _named_policy(arm, options)) for arm, _, weight in arms),
                       salt=options.ab_salt)
    if name == "learned":
        from pathlib import Path

        from pipeline.routing import DifficultyScorer, LearnedPolicy, load_model
        from pipeline.routing.policy import parse_overrides
        from pipeline.routing.scorer import MODEL_FILE
        from pipeline.semantic.embedders import StaticEmbedder

        watched = Path(options.model_file) if options.model_file else None
        path = watched if watched is not None and watched.exists() else MODEL_FILE
        scorer = DifficultyScorer(StaticEmbedder(), load_model(path))
        return LearnedPolicy(scorer, slm_share=options.slm_share, threshold=options.threshold,
                             overrides=parse_overrides(options.tenant_routes),
                             adaptive=True, quality_target=options.quality_target,
                             model_path=watched)
    raise ValueError(
        f"unknown routing policy {name!r}: baseline-length, learned, always-slm, always-llm, "
        "ab:NAME=WEIGHT,NAME=WEIGHT")
