"""Cost-aware routing: a learned difficulty score, calibration to a target SLM share, per-tenant
overrides and sticky A/B splits. Pure: no Kafka, no Faust."""

from pipeline.routing.policy import (
           ABSplit,
           LearnedPolicy,
           ShareCalibrator,
           TenantOverride,
           threshold_for_share,
)
from pipeline.routing.scorer import DifficultyScorer, LogisticModel

__all__ = ["ABSplit", "DifficultyScorer", "LearnedPolicy", "LogisticModel", "ShareCalibrator",
           "TenantOverride", "threshold_for_share"]
