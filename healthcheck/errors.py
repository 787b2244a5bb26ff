"""Errors that reach the user as one line and a distinct exit status, never as a traceback."""

from __future__ import annotations

import signal


class UsageError(Exception):
    """Bad input: the message says what is wrong and how to fix it (exit status 3, Nagios UNKNOWN)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Python raises KeyboardInterrupt for SIGINT."""


def interrupted_exit_status(cause: BaseException) -> int:
    """What a shell expects from a command a signal stopped: 128 + the signal's number (130, 143)."""
    number = signal.SIGTERM if isinstance(cause, Terminated) else signal.SIGINT
    return 128 + int(number)


def signal_name(cause: BaseException) -> str:
    return "SIGTERM" if isinstance(cause, Terminated) else "SIGINT (Ctrl-C)"
