"""One overall deadline per target, with a sub-deadline for each stage inside it."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """An absolute point in monotonic time; stages ask how much of it is left.

    Computing every timeout from the same absolute point is what keeps a slow
    peer (one byte per second) from stretching a stage: each blocking call gets
    only the time that remains, never a fresh timeout.
    """

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.budget = seconds
        self.expires_at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def stage(self, share: float) -> Deadline:
        """A sub-deadline of `share` x the overall budget from now, never past this one.

        Its `budget` is the time it really has, so a stage that reports how
        long it waited never claims the share it was cut short of.
        """
        child = Deadline(share * self.budget, self._clock)
        child.expires_at = min(child.expires_at, self.expires_at)
        child.budget = max(0.0, child.expires_at - self._clock())
        return child
