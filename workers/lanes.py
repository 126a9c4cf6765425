"""Live first in the workers: when a backfill-lane request may start, as pure decisions.

The router sends backfill-lane requests to their own route topics (route.slm.backfill,
route.llm.backfill). Each worker reads both lanes with one consumer and keeps the backfill
messages it has read in a small local queue (a lookahead), which these rules drain:

LLM worker (concurrent calls through one upstream pool of `pool` slots): a backfill call starts
only while live calls, backfill calls and shadow calls together leave `reserve` slots free:

    backfill in flight < min(pool, max_in_flight) - reserve - live in flight - shadows calling

So a live request arriving while the backfill is busy finds a free slot and starts at once
(up to `reserve` such arrivals per upstream latency; more wait at most for one backfill call,
never for the backlog). With live idle, the backfill has the whole pool but the reserve: no
starvation. The reserve is clamped to pool - 1, so even a pool of one slot serves the backfill.

SLM worker (one engine, micro-batches in turn, none of which can be interrupted): a backfill
batch runs only when no live request was delivered within the last `yield_s` (the router's
backfill_yield_s rule, counted per message here because one SLM batch is slow). While live
traffic was seen within `calm_s`, a backfill batch holds at most `backfill_batch` requests, so a
live request arriving meanwhile waits for one short batch at most; once live has been away that
long, backfill batches grow to the full batch size (the engine's best throughput). Live batches
never carry backfill requests. A steady live stream with gaps shorter than `yield_s` holds the
backfill; it resumes in the first gap, and `yield_s = 0` lets it fill every idle moment.

Both workers pause the backfill partitions while their lookahead is full (librdkafka then drops
what it had prefetched for them, so a live message is never stuck behind a prefetched backlog)
and resume them once it has drained to half (hysteresis, so they do not flap every message).
"""

from __future__ import annotations

from dataclasses import dataclass


def effective_reserve(pool: int, reserve: int) -> int:
    """The reserve actually held: at most pool - 1, so the backfill always has one slot."""
    return max(0, min(reserve, pool - 1))


def backfill_room(*, live: int, backfill: int, shadows: int, pool: int, max_in_flight: int,
                  reserve: int) -> int:
    """How many more backfill calls the LLM worker may start now (0: none)."""
    cap = min(pool, max_in_flight) - effective_reserve(min(pool, max_in_flight), reserve)
    return max(0, cap - live - backfill - shadows)


@dataclass(frozen=True)
class Lookahead:
    """Pause the backfill partitions at `high` messages waiting locally, resume at `low`."""

    high: int
    low: int

    @classmethod
    def of(cls, size: int) -> Lookahead:
        size = max(1, size)
        return cls(high=size, low=size // 2)

    def paused(self, waiting: int, paused_now: bool) -> bool:
        """Whether the backfill partitions should be paused, given how many wait locally."""
        if waiting >= self.high:
            return True
        if waiting <= self.low:
            return False
        return paused_now  # between the marks: keep the state (hysteresis)


class LiveYield:
    """The SLM worker's yield window: the backfill waits while live traffic was seen recently,
    and runs short batches until live traffic has been away for `calm_s`."""

    def __init__(self, yield_s: float, calm_s: float = 30.0) -> None:
        self.yield_s = yield_s
        self.calm_s = calm_s
        self.last_live = float("-inf")

    def saw_live(self, now: float) -> None:
        self.last_live = max(self.last_live, now)

    def backfill_open(self, now: float) -> bool:
        return now >= self.last_live + self.yield_s

    def backfill_batch(self, now: float, *, short: int, full: int) -> int:
        """The cap on the next backfill batch: `short` while live traffic is about, `full` once
        it has been away `calm_s` (a backfill alone runs at the engine's best batch size)."""
        return full if now >= self.last_live + self.calm_s else short


def plan_batch(*, live_waiting: int, backfill_waiting: int, batch_size: int, backfill_batch: int,
               backfill_open: bool) -> tuple[int, int]:
    """(live, backfill) requests for the SLM worker's next micro-batch: live first and alone;
    backfill only while it is open and live has nothing waiting, at most `backfill_batch`."""
    live = min(live_waiting, batch_size)
    if live or not backfill_open:
        return live, 0
    return 0, min(backfill_waiting, max(1, min(backfill_batch, batch_size)))
