"""Cost-aware routing: a learned difficulty score, calibration to a target SLM share, per-tenant
overrides and sticky A/B splits. Pure: no Kafka, no Faust."""

from pipeline.routing.policy import (
           ABSplit,
           LearnedPolicy,
           ShareCalibrator,
           TenantOverride,
           threshold_for_share,
)
from pipeline.routing.scorer import DifficultyScorer, GatedModel, LogisticModel, load_model

__all__ = ["ABSplit", "DifficultyScorer", "GatedModel", "LearnedPolicy", "LogisticModel", "ShareCalibrator",
           "TenantOverride", "load_model", "threshold_for_share"]
