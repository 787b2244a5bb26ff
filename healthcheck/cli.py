"""Command line: `python -m healthcheck COMMAND`. main() returns the exit status instead of exiting.

Each command's module adds its own parser and names the function that runs
it. What a command needs (paramiko, tenacity, boto3) is imported only when
that command runs, so the package starts on a bare Python.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from healthcheck import __version__
from healthcheck.drill import command as drill_command
from healthcheck.errors import UsageError
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
    drill_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting."""
    out = out or sys.stdout
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args, out))
    except UsageError as error:
        print(f"healthcheck: error: {error}", file=sys.stderr)
        return Status.UNKNOWN
    except KeyboardInterrupt:
        return Status.UNKNOWN
    except SystemExit as exit_request:  # --help and --version
        return exit_request.code if isinstance(exit_request.code, int) else Status.UNKNOWN
