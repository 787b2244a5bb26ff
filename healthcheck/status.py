"""Nagios states, shared by every command: the value doubles as the exit status."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Nagios plugin states; the value doubles as the process exit status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def worst(statuses: list[Status]) -> Status:
    """The most significant state, ranked by code as nagiosplugin does (UNKNOWN highest)."""
    return max(statuses, default=Status.OK)
