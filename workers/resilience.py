"""Circuit breaker and token bucket: pure state machines over an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class CircuitBreaker:
    """closed -> open after `failures_to_open` consecutive failures; after `cooldown_s` one probe
    call is let through (half-open): success closes it, failure opens it again."""

    failures_to_open: int = 5
    cooldown_s: float = 10.0
    clock: Clock = time.monotonic
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    _probe_out: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown_s:
            self.state = "half_open"
            self._probe_out = False
        if self.state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until allow() can next let a call through: 0 when closed, the rest of the
        cooldown when open, 0 while a half-open probe is out (its outcome may come any moment)."""
        if self.state == "open":
            return max(0.0, self.opened_at + self.cooldown_s - self.clock())
        return 0.0

    def record_success(self) -> None:
        self.state, self.failures, self._probe_out = "closed", 0, False

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self._probe_out = "open", self.clock(), False


@dataclass
class TokenBucket:
    """`rate_per_minute` tokens refill continuously up to one minute's worth; 0 means unlimited."""

    rate_per_minute: float
    clock: Clock = time.monotonic
    tokens: float = -1.0
    updated: float = -1.0

    def __post_init__(self) -> None:
        self.tokens = self.rate_per_minute
        self.updated = self.clock()

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` tokens are available (0 if now); takes them when 0."""
        if self.rate_per_minute <= 0:
            return 0.0
        now = self.clock()
        per_s = self.rate_per_minute / 60.0
        self.tokens = min(self.rate_per_minute, self.tokens + (now - self.updated) * per_s)
        self.updated = now
        amount = min(amount, self.rate_per_minute)  # a request larger than the bucket waits for a full one
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / per_s
