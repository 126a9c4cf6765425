"""One error tree for Pointsman.

    PointsmanError
    ├── ConfigError          bad or missing setting, file, binary: fix the setup, do not retry
    │   └── InfraError       a local service (Kafka, ClickHouse) could not be started or reached
    ├── InvalidMessage       a message breaks the contract: dead-letter it with the reason
    ├── RetryableError       transient: retry with backoff (upstream 429/5xx, timeouts, broker hiccups)
    └── PermanentError       will fail again the same way: record the error, do not retry

Third-party exceptions are translated into these at the I/O edge that raised them.
"""

from __future__ import annotations


class PointsmanError(Exception):
    """Root of every error Pointsman raises on purpose."""


class ConfigError(PointsmanError):
    """A setting, file or binary is missing or wrong."""


class InfraError(ConfigError):
    """A local service could not be started, stopped or reached."""


class InvalidMessage(PointsmanError):
    """A message breaks the topic contract; `reason` is what goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(PointsmanError):
    """A transient failure worth retrying."""


class PermanentError(PointsmanError):
    """A failure that retrying will not fix."""
