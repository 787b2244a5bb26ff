"""--watch, for every command that has it (probe, pull, status): one round every so many seconds, until told.

Each command gives its round's work and the report of its result (the
report's state is the round's); the loop keeps time and stops. Ctrl-C, SIGTERM or SIGHUP, whether a round is
running or the loop is sleeping, end it at once with Interrupted, which
counts the rounds that had completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from healthcheck.errors import Interrupted, Terminated
from healthcheck.status import Status

T = TypeVar("T")


def every(
    interval: float,
    rounds: int | None,
    work: Callable[[], T],
    report: Callable[[T], Status],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Status:
    """Do `work` every `interval` seconds (from one round's start to the next), `rounds` times or for ever, and
    `report` each round's result; returns the last round's state."""
    completed = 0
    status = Status.UNKNOWN
    try:
        while rounds is None or completed < rounds:
            started = clock()
            result = work()
            completed += 1  # before the report: a signal while it prints still counts this round
            status = report(result)
            if rounds is None or completed < rounds:
                sleep(max(0.0, interval - (clock() - started)))
    except (KeyboardInterrupt, Terminated) as cause:
        raise Interrupted(cause, f"{completed} rounds completed") from None
    return status
