"""The console every command shares: the question it asks, and the one line for an interruption."""

from __future__ import annotations

import signal

import pytest

from healthcheck.errors import Terminated, UsageError
from tests.conftest import StringConsole


@pytest.mark.parametrize(("answer", "agreed"), [("y\n", True), ("YES\n", True), ("\n", False), ("no\n", False)])
def test_only_a_typed_yes_agrees(answer: str, agreed: bool) -> None:
    console = StringConsole(answer, tty=True)

    assert console.confirm("Reboot i-0123456789abcdef0?", "pass --yes") is agreed
    assert console.out == "Reboot i-0123456789abcdef0? [y/N] "


def test_without_a_terminal_to_ask_on_it_says_how_to_go_on_without_asking() -> None:
    console = StringConsole("y\n")

    with pytest.raises(UsageError, match="not asking on a non-interactive input: pass --yes to reboot"):
        console.confirm("Reboot?", "pass --yes to reboot")
    assert console.out == ""


@pytest.mark.parametrize(
    ("cause", "status", "name"),
    [
        (KeyboardInterrupt(), 130, "SIGINT (Ctrl-C)"),
        (Terminated(), 143, "SIGTERM"),
        (Terminated(signal.SIGHUP), 129, "SIGHUP"),
    ],
)
def test_an_interruption_is_one_line_on_stderr_and_the_shells_exit_status(
    cause: BaseException, status: int, name: str
) -> None:
    console = StringConsole()

    assert console.interrupted(cause, "1 of 2 targets finished") == status
    assert console.err == f"trainguard: interrupted by {name}: 1 of 2 targets finished\n"
    assert console.out == ""
