"""Stage deadlines are shares of the budget, counted from the stage's start, never past the overall one."""

from __future__ import annotations

from healthcheck.probe.deadline import Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_gets_its_share_from_when_it_starts() -> None:
    clock = FakeClock()
    overall = Deadline(10, clock)
    clock.now += 1

    stage = overall.stage(0.6)

    assert stage.remaining() == 6.0
    assert stage.budget == 6.0


def test_a_stage_never_outlives_the_overall_deadline() -> None:
    clock = FakeClock()
    overall = Deadline(10, clock)
    clock.now += 8

    stage = overall.stage(0.6)

    assert stage.remaining() == 2.0


def test_remaining_never_goes_negative() -> None:
    clock = FakeClock()
    overall = Deadline(1, clock)
    clock.now += 5

    assert overall.remaining() == 0.0
    assert overall.expired
