"""The command line: `trainguard COMMAND` (or `python -m healthcheck COMMAND`). main() returns the exit status.

Each command's module adds its own parser and names the function that runs
it. Only the module of the command being run is imported (every one for the
top-level --help), and what a command needs (paramiko, tenacity, boto3) only
when it runs, so the package starts fast and on a bare Python.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from healthcheck import __version__
from healthcheck.console import PROGRAM, Console
from healthcheck.errors import Interrupted, OutputLost, Terminated, UsageError
from healthcheck.status import Status

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

DESCRIPTION = (
    "trainguard: tell whether a training host answers SSH and why not, recover a frozen one, "
    "and keep its results off the machine."
)
# Each command and the module whose add_parser() adds it, in the order --help lists them.
COMMAND_MODULES = {
    "probe": "healthcheck.probe.command",
    "demo": "healthcheck.probe.command",
    "status": "healthcheck.overview.command",
    "reboot": "healthcheck.remediation.command",
    "launch": "healthcheck.guard.launch",
    "pull": "healthcheck.pull.command",
    "drill": "healthcheck.drill.command",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as a UsageError (exit 3), not exit 2 with usage text, and names an option it
    does not know before a positional that is missing (`probe --bogus` is about --bogus, not about TARGET)."""

    words: Sequence[str] = ()  # the command line being parsed

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """--help and --version, whose write errors argparse would swallow: a closed pipe or a full disk is
        told as for any other output."""
        if message:
            try:
                (file or sys.stdout).write(message)
                sys.stdout.flush()
            except OSError as error:
                raise OutputLost(error) from None

    def error(self, message: str) -> None:  # type: ignore[override]
        unknown = [word for word in self._options_in(self.words) if not self._knows(word)]
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)}"
        raise UsageError(message)

    @staticmethod
    def _options_in(words: Sequence[str]) -> list[str]:
        before_end = list(words)[: list(words).index("--")] if "--" in words else list(words)
        return [word.split("=", 1)[0] for word in before_end if word.startswith("-") and not _number(word)]

    def _knows(self, option: str) -> bool:
        # argparse also takes an unambiguous prefix of a long option (allow_abbrev).
        return any(known == option or known.startswith(option) for known in self._option_string_actions)


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: with only its command's module imported when argv starts with a command, else all."""
    parser = _Parser(prog=PROGRAM, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = argv[0] if argv else ""
    modules = [COMMAND_MODULES[named]] if named in COMMAND_MODULES else dict.fromkeys(COMMAND_MODULES.values())
    for module in modules:
        importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting.

    Bad input is one line on stderr and exit 3. Ctrl-C exits 130, SIGTERM 143 and SIGHUP 129 (128 + the
    signal's number, as shells report them), with one line on stderr and no traceback; a command that was
    interrupted mid-run prints what had finished first.
    """
    console = console or Console()
    with _termination_raises():
        try:
            argv = sys.argv[1:] if argv is None else argv
            _Parser.words = argv
            args = build_parser(argv).parse_args(argv)
            return int(args.run(args, console))
        except UsageError as error:
            console.error(str(error))
            return Status.UNKNOWN
        except OutputLost as lost:
            return console.output_lost(lost.error)
        except BrokenPipeError as closed:  # argparse writes --help itself
            return console.output_lost(closed)
        except Interrupted as stopped:
            return console.interrupted(stopped.cause, stopped.progress)
        except (KeyboardInterrupt, Terminated) as cause:
            return console.interrupted(cause)
        except SystemExit as exit_request:  # --help and --version
            return exit_request.code if isinstance(exit_request.code, int) else Status.UNKNOWN


@contextlib.contextmanager
def _termination_raises() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise Terminated in the main thread, as SIGINT raises
    KeyboardInterrupt, so every command cleans up as it does on Ctrl-C. A signal ignored on purpose (nohup
    ignores SIGHUP) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    caught = [number for number in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(number) is not signal.SIG_IGN]
    previous = {number: signal.signal(number, terminate) for number in caught}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
