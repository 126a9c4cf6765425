"""Ctrl-C around librdkafka's callbacks (infra/kafka_io.py): held off inside, raised after,
where Python's own handler would raise it; untouched where a role has its own handler."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from infra.kafka_io import ctrl_c_outside_callbacks


@pytest.fixture()
def default_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_inside_is_raised_after_the_block(default_handler: None) -> None:
    seen_inside = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_outside_callbacks() as interrupted:
        assert not interrupted()
        os.kill(os.getpid(), signal.SIGINT)  # would raise here, inside a "callback"
        seen_inside.append(interrupted())
    assert seen_inside == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_leaves_nothing_behind(default_handler: None) -> None:
    with ctrl_c_outside_callbacks() as interrupted:
        assert not interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_roles_own_handler_is_not_touched() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: calls.append(signum))
    try:
        with ctrl_c_outside_callbacks() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            assert calls == [signal.SIGINT] and not interrupted()  # delivered at once, as before
    finally:
        signal.signal(signal.SIGINT, previous)
