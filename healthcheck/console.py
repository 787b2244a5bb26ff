"""The edges every command shares: where its output goes, how it asks, and how it says it was interrupted.

As httpie's Environment: one object carries stdin, stdout and stderr, so a
command is a function of its arguments and its console, and a test hands it
a console of strings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import TextIO

from healthcheck.errors import OutputLost, UsageError, interrupted_exit_status, signal_name
from healthcheck.status import Status

PROGRAM = "trainguard"


def printable(text: str) -> str:
    """Text safe for a terminal: control and format characters (ESC, CR, BEL, bidi overrides) escaped.

    Banners, S3 keys, tags and alarm reasons come from others; unescaped, an
    ESC sequence in one could retitle, clear or rewrite the user's terminal.
    """
    return "".join(
        char if unicodedata.category(char) not in ("Cc", "Cf") else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


@dataclass
class Console:
    """A command's terminal: results on stdout, diagnostics on stderr, answers from stdin."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    def say(self, text: str = "", *, end: str = "\n") -> None:
        """A line of the command's output, flushed at once (a watch's line must not wait in a buffer)."""
        try:
            print(text, file=self.stdout, end=end, flush=True)
        except OSError as error:  # `| head` closed the pipe, or the file's disk is full
            raise OutputLost(error) from None

    def warn(self, text: str) -> None:
        print(f"{PROGRAM}: warning: {text}", file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"{PROGRAM}: error: {text}", file=self.stderr, flush=True)

    @property
    def interactive(self) -> bool:
        return self.stdout.isatty()

    def confirm(self, question: str, without_asking: str) -> bool:
        """Ask `question`; only a typed y or yes agrees. Without a terminal to ask on, bad input that says
        how to proceed without asking (`without_asking`, e.g. "pass --yes to reboot i-...")."""
        if not self.stdin.isatty():
            raise UsageError(f"not asking on a non-interactive input: {without_asking}")
        self.say(f"{question} [y/N] ", end="")
        return self.stdin.readline().strip().lower() in ("y", "yes")

    def output_lost(self, error: OSError) -> int:
        """The output could not be written. A reader that went away (`trainguard probe ... | head -1`) is no error:
        exit as a process SIGPIPE ended would (141), quietly. Anything else (a full disk) is one line on stderr."""
        if isinstance(error, BrokenPipeError):
            if self.stdout is sys.stdout:
                # Python flushes stdout again at exit; point it where a flush cannot fail.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        with contextlib.suppress(OSError, ValueError):
            print(f"{PROGRAM}: error: could not write the output: {error.strerror or error}", file=self.stderr)
        return int(Status.UNKNOWN)

    def interrupted(self, cause: BaseException, progress: str = "") -> int:
        """The one line that says a signal cut the command short (on stderr, so JSON output stays whole), and
        the exit status a shell expects: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
        line = f"{PROGRAM}: interrupted by {signal_name(cause)}" + (f": {progress}" if progress else "")
        # A closed terminal (SIGHUP) takes stdout and stderr with it.
        with contextlib.suppress(OSError, ValueError):
            self.stdout.flush()
        with contextlib.suppress(OSError, ValueError):
            print(line, file=self.stderr, flush=True)
        return interrupted_exit_status(cause)
