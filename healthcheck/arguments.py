"""Argument types shared by the commands' parsers: argparse reports their errors as one line (exit 3)."""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable

from healthcheck.contract import is_instance_id
from healthcheck.errors import UsageError


def bounded(kind: Callable[[str], float], low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: `kind(text)`, refused unless it lies between low and high (both allowed)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            whole = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{what} must be {whole}, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low:g} and {high:g}, not {text}")
        return value

    return parse


def instance_id(text: str) -> str:
    """An argparse type: an EC2 instance id, whole (i- and 8 or 17 hexadecimal digits)."""
    if not is_instance_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an instance id: pass one like i-0123456789abcdef0")
    return text


# Descriptors kept for everything but the concurrent tasks: the interpreter, its libraries, stdio, a log.
RESERVED_FILES = 32


def open_files_limit() -> int:
    """The process's soft limit on open files (macOS's default is 256; `ulimit -n` raises it)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def capped_by_open_files(requested: int, files_each: int, limit: int) -> int:
    """How many of `requested` concurrent tasks fit in `limit` open files, each task holding `files_each` (pure)."""
    return max(1, min(requested, (limit - RESERVED_FILES) // files_each))


def add_watch_arguments(parser: argparse.ArgumentParser, each_round: str) -> None:
    """--watch SECONDS and --rounds N, as every command that watches has them; `each_round` says what a round
    prints."""
    parser.add_argument(
        "--watch",
        type=bounded(float, 1, 86400, "--watch"),
        metavar="SECONDS",
        help=f"run again every SECONDS and print {each_round}, until Ctrl-C or SIGTERM",
    )
    parser.add_argument(
        "--rounds", type=bounded(int, 1, 10**9, "--rounds"), metavar="N", help="with --watch, stop after N rounds"
    )


def check_watch_arguments(args: argparse.Namespace) -> None:
    """--rounds only counts --watch rounds."""
    if args.rounds is not None and args.watch is None:
        raise UsageError("--rounds counts --watch rounds: add --watch SECONDS, or drop --rounds")
