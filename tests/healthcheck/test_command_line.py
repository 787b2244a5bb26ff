"""The command line's dispatch: a command imports its own module only, so every command starts fast."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from healthcheck.cli import COMMAND_MODULES, build_parser
from tests.conftest import Run

REPO_ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_a_command_imports_no_other_commands_module(command: str) -> None:
    others = sorted(set(COMMAND_MODULES.values()) - {COMMAND_MODULES[command]})
    script = (
        "import sys\n"
        "from healthcheck.cli import main\n"
        f"main([{command!r}, '--help'])\n"
        f"print([name for name in {others!r} if name in sys.modules])\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )

    assert f"python -m healthcheck {command}" in ran.stdout
    assert ran.stdout.rstrip().endswith("[]"), ran.stdout


def test_without_a_command_every_command_is_there_for_the_top_level_help() -> None:
    parser = build_parser()

    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]

    assert list(commands.choices) == list(COMMAND_MODULES)


REMEDY = "run `aws configure` or `aws sso login`, or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
EVERY_AWS_COMMAND = pytest.mark.parametrize(
    "argv",
    [
        ["probe", "i-0123456789abcdef0"],
        ["reboot", "i-0123456789abcdef0", "--yes"],
        ["pull", "--bucket", "trainguard-results-test", "DEST"],
        ["drill", "i-0123456789abcdef0", "--yes"],
    ],
    ids=lambda argv: argv[0],
)


@EVERY_AWS_COMMAND
def test_every_command_says_no_credentials_in_one_line_with_the_same_remedy(
    argv: list[str], tmp_path: Path, run_cli: Callable[..., Run]
) -> None:
    argv = [str(tmp_path / "pulled") if word == "DEST" else word for word in argv]

    ran = run_cli(*argv, "--region", "eu-west-1")

    assert ran.code == 3
    assert ran.stderr.startswith("healthcheck: error: no AWS credentials to ")
    assert ran.stderr.endswith(f": {REMEDY}\n")
    assert ran.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [["probe", "i-0123456789abcdef0"], ["reboot", "i-0123456789abcdef0", "--yes"], ["drill", "i-0123456789abcdef0"]],
    ids=lambda argv: argv[0],
)
def test_every_command_says_no_region_in_one_line_naming_the_three_ways_to_give_one(
    argv: list[str], run_cli: Callable[..., Run], aws_credentials: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    ran = run_cli(*argv)

    assert ran.code == 3
    assert ran.stderr.startswith("healthcheck: error: no AWS region to ")
    assert ran.stderr.endswith(": pass --region, or set AWS_REGION or AWS_DEFAULT_REGION\n")
    assert ran.stderr.count("\n") == 1
