"""Command line: `python -m healthcheck COMMAND`. main() returns the exit status instead of exiting.

Each command's module adds its own parser and names the function that runs
it. What a command needs (paramiko, tenacity, boto3) is imported only when
that command runs, so the package starts on a bare Python.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

from healthcheck import __version__
from healthcheck.drill import command as drill_command
from healthcheck.errors import Terminated, UsageError, interrupted_exit_status, signal_name
from healthcheck.guard import launch as launch_command
from healthcheck.probe import command as probe_command
from healthcheck.remediation import command as reboot_command
from healthcheck.status import Status


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as a UsageError (exit 3), not exit 2 with usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m healthcheck", description="trainguard health checks for training hosts.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    probe_command.add_parser(commands)
    reboot_command.add_parser(commands)
    launch_command.add_parser(commands)
    drill_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal's number, as shells
    report them), with one line on stderr and no traceback; a command that
    was interrupted mid-run prints what had finished first.
    """
    out = out or sys.stdout
    with _sigterm_raises():
        try:
            args = build_parser().parse_args(argv)
            return int(args.run(args, out))
        except UsageError as error:
            print(f"healthcheck: error: {error}", file=sys.stderr)
            return Status.UNKNOWN
        except (KeyboardInterrupt, Terminated) as cause:
            print(f"healthcheck: interrupted by {signal_name(cause)}", file=sys.stderr)
            return interrupted_exit_status(cause)
        except SystemExit as exit_request:  # --help and --version
            return exit_request.code if isinstance(exit_request.code, int) else Status.UNKNOWN


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a command runs, SIGTERM raises Terminated in the main thread, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
