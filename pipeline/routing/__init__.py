"""Cost-aware routing: a learned difficulty score, calibration to a target SLM share, per-tenant
overrides and sticky A/B splits. Pure: no Kafka, no Faust."""
