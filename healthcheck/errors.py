"""Errors that reach the user as one line and a distinct exit status, never as a traceback."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class UsageError(Exception):
    """Bad input: the message says what is wrong and how to fix it (exit status 3, Nagios UNKNOWN)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP (a closed terminal), raised in the main thread as Python raises KeyboardInterrupt
    for SIGINT."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signal.Signals(signum)


def interrupted_exit_status(cause: BaseException) -> int:
    """What a shell expects from a command a signal stopped: 128 + the signal's number (130, 143, 129)."""
    number = cause.signum if isinstance(cause, Terminated) else signal.SIGINT
    return 128 + int(number)


def signal_name(cause: BaseException) -> str:
    return cause.signum.name if isinstance(cause, Terminated) else "SIGINT (Ctrl-C)"


def no_aws_credentials(purpose: str) -> UsageError:
    """The one way every command says it found no AWS credentials, naming what it needed them for."""
    return UsageError(
        f"no AWS credentials {purpose}: run `aws configure` or `aws sso login`, "
        "or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )


def no_aws_region(purpose: str) -> UsageError:
    """The one way every command says it found no AWS region."""
    return UsageError(f"no AWS region {purpose}: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION")


@contextlib.contextmanager
def aws_setup_as_usage(credentials_for: str, region_for: str) -> Iterator[None]:
    """botocore's "no credentials" and "no region", each as one line of bad input naming what it was for."""
    from botocore.exceptions import NoCredentialsError, NoRegionError

    try:
        yield
    except NoCredentialsError:
        raise no_aws_credentials(credentials_for) from None
    except NoRegionError:
        raise no_aws_region(region_for) from None
