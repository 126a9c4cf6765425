"""Routing policies over the difficulty score: calibrated threshold, tenant overrides, A/B split.

All satisfy pipeline.policy.Policy (`decide(query) -> Decision`); the reason string records the
policy, score, threshold (and A/B arm), which the router copies into RouteRequest.reason and so
into Result.route_reason; the same figures travel as Decision.policy / score / threshold to the
results table's columns of those names.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from pipeline.policy import FORCED, Decision, Policy
from pipeline.routing.scorer import DifficultyScorer, GatedModel, load_model
from topics.schemas import Query, Track

log = logging.getLogger(__name__)


def threshold_for_share(scores: Sequence[float] | np.ndarray, slm_share: float) -> float:
    """The score below which `slm_share` of these scores fall: those go to the SLM."""
    if not 0.0 <= slm_share <= 1.0:
        raise ValueError(f"slm_share must be in [0, 1], got {slm_share}")
    arr = np.asarray(scores, np.float64)
    if slm_share >= 1.0:
        return float("inf")
    return float(np.quantile(arr, slm_share)) if arr.size else 0.5


class ShareCalibrator:
    """Keeps the SLM share on target as traffic drifts: threshold = quantile of recent scores."""

    def __init__(self, slm_share: float, initial: float, window: int = 5000, every: int = 500) -> None:
        self.slm_share = slm_share
        self.threshold = initial
        self.every = every
        self._recent: deque[float] = deque(maxlen=window)
        self._seen = 0

    def observe(self, score: float) -> float:
        self._recent.append(score)
        self._seen += 1
        if self._seen % self.every == 0 and len(self._recent) >= self.every:
            self.threshold = threshold_for_share(np.fromiter(self._recent, float), self.slm_share)
        return self.threshold


@dataclass(frozen=True)
class TenantOverride:
    track: Track | None = None  # force every query of the tenant to this track
    threshold: float | None = None  # or the tenant's own threshold


def query_text(query: Query) -> str:
    return "\n".join(m.content for m in query.chat())


@dataclass
class LearnedPolicy:
    """score >= threshold -> llm, else slm. The threshold comes from, first to last: a tenant's own,
    `threshold`, `quality_target` (per head, from the model's quality curves: the share follows),
    `slm_share` (a quantile of the scores, kept on target by live traffic when `adaptive`)."""

    scorer: DifficultyScorer
    slm_share: float = 0.8
    threshold: float | None = None
    overrides: Mapping[str, TenantOverride] = field(default_factory=dict)
    adaptive: bool = False  # follow live traffic's score distribution (ShareCalibrator)
    quality_target: float | None = None
    model_path: Path | None = None  # reload the model when this file changes (a retrained router)
    reload_every_s: float = 30.0
    name: str = "learned"

    def __post_init__(self) -> None:
        self._fixed = self.threshold is not None
        self._calibrate()
        self._checked_at = time.monotonic()
        self._mtime = self._model_mtime()

    def _calibrate(self) -> None:
        self._head_thresholds: dict[str, float] = {}
        if self.quality_target is not None and not self._fixed:
            self._head_thresholds = self.scorer.quality_thresholds(self.quality_target)
            self.threshold = max(self._head_thresholds.values())
        elif not self._fixed:
            self.threshold = self.scorer.threshold_for_share(self.slm_share)
        share_mode = self.adaptive and not self._fixed and self.quality_target is None
        self._calibrator = ShareCalibrator(self.slm_share, self.threshold) if share_mode else None

    def _model_mtime(self) -> float | None:
        try:
            return self.model_path.stat().st_mtime if self.model_path is not None else None
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self.model_path is None or now - self._checked_at < self.reload_every_s:
            return
        self._checked_at = now
        mtime = self._model_mtime()
        if mtime is None or mtime == self._mtime:
            return
        try:
            model = load_model(self.model_path)
            scorer = DifficultyScorer(self.scorer.embedder, model)
            old = (self.scorer, self.threshold)
            self.scorer, self._mtime = scorer, mtime
            try:
                self._calibrate()
            except ValueError:
                self.scorer, self.threshold = old
                raise
        except (OSError, ValueError, KeyError) as exc:  # a half-written or unusable file: keep the old
            log.warning("routing model %s not reloaded: %s", self.model_path, exc)
            return
        log.info("routing model reloaded from %s", self.model_path)

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision:
        override = self.overrides.get(query.tenant)
        if override is not None and override.track is not None:
            return Decision(override.track, f"{self.name}: tenant {query.tenant} forced to {override.track}",
                            escalate=override.track != "slm",  # forced to the SLM: its own answers
                            policy=FORCED)
        self._maybe_reload()
        text = query_text(query)
        score = float(self.scorer.score([text], None if vector is None else vector[None, :])[0])
        threshold, mode = self.threshold, f"slm share {self.slm_share:.2f}"
        if self._head_thresholds:
            head = GatedModel.head_of(text)
            threshold = self._head_thresholds[head]
            score = float(self.scorer.model.routing_keys(np.array([score]), [text])[0])  # type: ignore[union-attr]
            mode = f"{head} head, quality target {self.quality_target:.2f}"
        elif self._calibrator is not None:
            threshold = self._calibrator.observe(score)
        own = override is not None and override.threshold is not None
        if own:
            threshold = override.threshold  # type: ignore[union-attr]
        track: Track = "llm" if score >= threshold else "slm"  # type: ignore[operator]
        who = f"tenant {query.tenant} " if own else ""
        return Decision(track, f"{self.name}: score {score:.3f} {'>=' if track == 'llm' else '<'} "
                               f"{who}threshold {threshold:.3f} ({mode})",
                        policy=self.name, score=score, threshold=float(threshold))  # type: ignore[arg-type]


def arm_of(unit: str, weights: Sequence[float], salt: str = "") -> int:
    """Sticky arm: the same unit (tenant, user) always gets the same arm for one salt."""
    point = xxhash.xxh64_intdigest(f"{salt}\x1f{unit}".encode()) / 2**64 * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if point < acc:
            return i
    return len(weights) - 1


@dataclass(frozen=True)
class ABSplit:
    """Routes each unit by one arm's policy; `unit` is metadata[unit_key] or else the tenant."""

    arms: tuple[tuple[str, float, Policy], ...]  # (arm name, weight, policy)
    salt: str = "ab1"
    unit_key: str = "user"
    name: str = "ab"

    def decide(self, query: Query, vector: np.ndarray | None = None) -> Decision:
        unit = str(query.metadata.get(self.unit_key, query.tenant))
        arm, _, policy = self.arms[arm_of(unit, [w for _, w, _ in self.arms], self.salt)]
        inner = policy.decide(query, vector)
        # the arm in the policy column too, so arms compare with a GROUP BY
        return Decision(inner.track, f"{self.name}[{self.salt}:{arm}] {inner.reason}",
                        escalate=inner.escalate, policy=f"{self.name}[{self.salt}]:{arm}",
                        score=inner.score, threshold=inner.threshold)


def parse_overrides(spec: str) -> dict[str, TenantOverride]:
    """`vip=llm,cheap=0.9,batch=slm` -> per-tenant overrides (a track, or the tenant's own threshold)."""
    out: dict[str, TenantOverride] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        tenant, _, value = item.partition("=")
        if value in ("slm", "llm"):
            out[tenant.strip()] = TenantOverride(track=value)  # type: ignore[arg-type]
        else:
            try:
                out[tenant.strip()] = TenantOverride(threshold=float(value))
            except ValueError:
                raise ValueError(f"tenant override {item!r}: want TENANT=slm|llm|THRESHOLD") from None
    return out
