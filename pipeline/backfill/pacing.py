"""When a job may send its next query: the rate limit and the budget. Pure: the caller passes
the clock and the tally.

The budget is checked against what the job's answers cost, which is known only when they come
back, so the gate also bounds what is in flight: it lets a query go only while the spend so far
plus the in-flight queries at the job's mean cost per answer stays under the budget. Before the
first answers there is no mean yet: a few probe queries go first. The overrun past the budget is
then at most the last few answers' deviation from the mean, and the job stops sending the moment
its spend reaches the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_QUERIES = 4  # in flight before any answer has told the job what one costs


@dataclass
class RateLimit:
    """At most `per_s` queries a second: a token bucket holding one second's worth, so an idle
    spell is never made up by a burst larger than that."""

    per_s: float | None
    _tokens: float | None = None
    _at: float | None = None

    def _refill(self, now: float) -> float:
        assert self.per_s is not None
        capacity = max(1.0, self.per_s)
        if self._tokens is None or self._at is None:
            self._tokens, self._at = capacity, now
        self._tokens = min(capacity, self._tokens + max(0.0, now - self._at) * self.per_s)
        self._at = now
        return self._tokens

    def wait_s(self, now: float) -> float:
        """Seconds until the next query may go (0: now)."""
        if self.per_s is None:
            return 0.0
        return max(0.0, (1.0 - self._refill(now)) / self.per_s)

    def sent(self, now: float) -> None:
        if self.per_s is not None:
            self._tokens = self._refill(now) - 1.0


@dataclass(frozen=True)
class Window:
    """How many queries may be in flight (sent, not yet answered)."""

    max_in_flight: int
    budget_usd: float | None = None

    def room(self, *, in_flight: int, spent_usd: float, answered: int) -> int:
        """How many more may be sent now; 0 when the window or the budget is full."""
        room = self.max_in_flight - in_flight
        if self.budget_usd is None:
            return max(room, 0)
        if spent_usd >= self.budget_usd:
            return 0
        if answered == 0:
            return max(min(room, PROBE_QUERIES - in_flight), 0)
        mean = spent_usd / answered
        if mean <= 0:
            return max(room, 0)  # answers so far cost nothing (cache hits): only the window bounds it
        affordable = int((self.budget_usd - spent_usd) / mean) - in_flight
        if in_flight == 0:
            affordable = max(affordable, 1)  # under budget with nothing out: one more may go
        return max(min(room, affordable), 0)

    def exhausted(self, spent_usd: float) -> bool:
        return self.budget_usd is not None and spent_usd >= self.budget_usd
