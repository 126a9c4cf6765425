import pytest

from workers.resilience import CircuitBreaker, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=2, cooldown_s=5, clock=clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and not breaker.allow()  # exactly one probe in half-open
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_wait_s_is_the_rest_of_the_cooldown_while_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown_s=5, clock=clock)
    assert breaker.wait_s() == 0.0
    breaker.record_failure()
    clock.now = 2.0
    assert breaker.wait_s() == 3.0
    clock.now = 7.0
    assert breaker.wait_s() == 0.0 and breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures_to_open=2, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_token_bucket_refills_per_minute() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_minute=60, clock=clock)  # one per second
    assert bucket.wait_time(60) == 0.0
    assert bucket.wait_time(1) == pytest.approx(1.0)
    clock.now = 2.0
    assert bucket.wait_time(2) == 0.0
    assert bucket.wait_time(1) == pytest.approx(1.0)
    assert TokenBucket(rate_per_minute=0, clock=clock).wait_time(10**9) == 0.0  # unlimited
