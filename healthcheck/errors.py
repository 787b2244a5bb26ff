"""Errors that reach the user as one line and exit status 3 (Nagios UNKNOWN)."""


class UsageError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""
