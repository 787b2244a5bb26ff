"""Errors that reach the user as one line and a distinct exit status, never as a traceback."""

from __future__ import annotations

import signal


class UsageError(Exception):
    """Bad input: the message says what is wrong and how to fix it (exit status 3, Nagios UNKNOWN)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP (a closed terminal), raised in the main thread as Python raises KeyboardInterrupt
    for SIGINT."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signal.Signals(signum)


class Interrupted(BaseException):
    """A command a signal cut short, once it has cleaned up: the signal, and how far it got, for the one line
    the console prints."""

    def __init__(self, cause: BaseException, progress: str = "") -> None:
        super().__init__(progress)
        self.cause = cause
        self.progress = progress


class OutputLost(Exception):
    """The command's output could not be written: its reader went away (a closed pipe) or its file failed (a full
    disk); carries the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def interrupted_exit_status(cause: BaseException) -> int:
    """What a shell expects from a command a signal stopped: 128 + the signal's number (130, 143, 129)."""
    number = cause.signum if isinstance(cause, Terminated) else signal.SIGINT
    return 128 + int(number)


def signal_name(cause: BaseException) -> str:
    return cause.signum.name if isinstance(cause, Terminated) else "SIGINT (Ctrl-C)"
