"""Live first in the workers: the pure lane decisions (workers/lanes.py)."""

from __future__ import annotations

from workers.lanes import (
    LiveYield,
    Lookahead,
    backfill_room,
    effective_reserve,
    plan_batch,
)


def room(live: int, backfill: int, *, shadows: int = 0, pool: int = 16, max_in_flight: int = 256,
         reserve: int = 2) -> int:
    return backfill_room(live=live, backfill=backfill, shadows=shadows, pool=pool,
                         max_in_flight=max_in_flight, reserve=reserve)


def test_with_live_idle_the_backfill_gets_the_pool_but_the_reserve() -> None:
    assert room(0, 0) == 14
    assert room(0, 13) == 1
    assert room(0, 14) == 0


def test_live_calls_shrink_the_backfill_room_and_the_reserve_stays_free() -> None:
    assert room(4, 0) == 10
    assert room(4, 10) == 0
    # live beyond the pool: no backfill at all, however many backfill calls are open
    assert room(20, 0) == 0
    assert room(20, 5) == 0
    for live in range(0, 17):
        for backfill in range(0, 17):
            granted = room(live, backfill)
            if granted:  # whatever the backfill starts still leaves the reserve free
                assert live + backfill + granted <= 16 - 2


def test_shadows_calling_count_against_the_pool() -> None:
    assert room(0, 0, shadows=2) == 12


def test_max_in_flight_below_the_pool_caps_the_backfill_too() -> None:
    assert room(0, 0, max_in_flight=4) == 2


def test_a_tiny_pool_never_starves_the_backfill() -> None:
    assert effective_reserve(1, 2) == 0
    assert effective_reserve(2, 2) == 1
    assert room(0, 0, pool=1) == 1
    assert room(1, 0, pool=1) == 0
    assert room(0, 0, pool=2) == 1


def test_lookahead_pauses_when_full_and_resumes_at_half() -> None:
    marks = Lookahead.of(16)
    assert (marks.high, marks.low) == (16, 8)
    assert marks.paused(16, False) is True
    assert marks.paused(12, True) is True  # between the marks: stays paused
    assert marks.paused(12, False) is False  # ... or stays resumed
    assert marks.paused(8, True) is False
    assert Lookahead.of(0).high == 1


def test_live_yield_holds_the_backfill_for_the_window_then_opens() -> None:
    gate = LiveYield(0.5)
    assert gate.backfill_open(0.0)
    gate.saw_live(10.0)
    assert not gate.backfill_open(10.2)
    assert not gate.backfill_open(10.49)
    assert gate.backfill_open(10.5)
    gate.saw_live(10.6)
    gate.saw_live(10.1)  # an earlier sighting never shortens the window
    assert not gate.backfill_open(11.0)
    assert gate.backfill_open(11.1)


def test_backfill_batches_stay_short_while_live_is_about_and_grow_once_it_is_calm() -> None:
    gate = LiveYield(0.5, calm_s=30.0)
    assert gate.backfill_batch(0.0, short=4, full=16) == 16  # no live traffic yet
    gate.saw_live(100.0)
    assert gate.backfill_batch(100.6, short=4, full=16) == 4  # open again, but live is about
    assert gate.backfill_batch(129.9, short=4, full=16) == 4
    assert gate.backfill_batch(130.0, short=4, full=16) == 16


def test_a_zero_window_lets_the_backfill_fill_every_idle_moment() -> None:
    gate = LiveYield(0.0)
    gate.saw_live(5.0)
    assert gate.backfill_open(5.0)


def plan(live: int, backfill: int, *, open_: bool = True, batch: int = 16,
         backfill_batch: int = 4) -> tuple[int, int]:
    return plan_batch(live_waiting=live, backfill_waiting=backfill, batch_size=batch,
                      backfill_batch=backfill_batch, backfill_open=open_)


def test_live_goes_first_and_alone() -> None:
    assert plan(3, 100) == (3, 0)
    assert plan(40, 100) == (16, 0)


def test_backfill_runs_short_batches_only_while_open() -> None:
    assert plan(0, 100) == (0, 4)
    assert plan(0, 2) == (0, 2)
    assert plan(0, 100, open_=False) == (0, 0)
    assert plan(0, 0) == (0, 0)
    # the cap never exceeds the batch size and is at least one
    assert plan(0, 100, batch=2, backfill_batch=8) == (0, 2)
    assert plan(0, 100, backfill_batch=0) == (0, 1)
