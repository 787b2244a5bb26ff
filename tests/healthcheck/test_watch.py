"""--watch's loop: rounds on time, a state per round, and an interrupt that counts what had completed."""

from __future__ import annotations

import pytest

from healthcheck.errors import Interrupted, Terminated
from healthcheck.status import Status
from healthcheck.watch import every


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rounds_start_every_interval_and_the_last_rounds_state_is_returned() -> None:
    clock = Clock()
    states = iter([Status.OK, Status.WARNING, Status.CRITICAL])

    def work() -> None:
        clock.now += 2.5  # each round takes 2.5 s of the 10

    status = every(10, 3, work, lambda _: next(states), sleep=clock.sleep, clock=clock)

    assert status is Status.CRITICAL
    assert clock.slept == [7.5, 7.5]  # no sleep after the last round


def test_a_round_longer_than_the_interval_is_followed_at_once() -> None:
    clock = Clock()

    def work() -> None:
        clock.now += 15

    every(10, 2, work, lambda _: Status.OK, sleep=clock.sleep, clock=clock)

    assert clock.slept == [0.0]


@pytest.mark.parametrize("cause", [KeyboardInterrupt(), Terminated()])
def test_a_signal_during_a_report_counts_that_round(cause: BaseException) -> None:
    clock = Clock()
    reports = 0

    def report(_: None) -> Status:
        nonlocal reports
        reports += 1
        if reports == 2:
            raise cause
        return Status.OK

    with pytest.raises(Interrupted) as stopped:
        every(10, None, lambda: None, report, sleep=clock.sleep, clock=clock)

    assert stopped.value.cause is cause
    assert stopped.value.progress == "2 rounds completed"


def test_a_signal_during_the_work_does_not_count_it() -> None:
    def work() -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        every(10, None, work, lambda _: Status.OK)

    assert stopped.value.progress == "0 rounds completed"
