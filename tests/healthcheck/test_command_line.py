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

    assert f"usage: trainguard {command}" in ran.stdout
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
        ["status", "--stack", "dev"],
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
    assert ran.stderr.startswith("trainguard: error: no AWS credentials to ")
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
    assert ran.stderr.startswith("trainguard: error: no AWS region to ")
    assert ran.stderr.endswith(": pass --region, or set AWS_REGION or AWS_DEFAULT_REGION\n")
    assert ran.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [["--help"], ["probe", "--help"], ["probe", "--no-login", "127.0.0.1:9"]])
def test_a_reader_that_went_away_ends_the_command_quietly_as_sigpipe_would(argv: list[str]) -> None:
    """`trainguard ... | head -1`: once head has its line and exits, the rest cannot be written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "healthcheck", *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes a byte

    errors = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert errors == ""


@pytest.mark.parametrize("argv", [["--help"], ["probe", "--no-login", "127.0.0.1:9"]])
def test_output_to_a_full_disk_is_one_line_and_exit_3(argv: list[str]) -> None:
    with open("/dev/full", "w") as full:
        ran = subprocess.run(
            [sys.executable, "-m", "healthcheck", *argv],
            cwd=REPO_ROOT,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )

    assert ran.returncode == 3
    assert ran.stderr == "trainguard: error: could not write the output: No space left on device\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "--bogus"],
        ["reboot", "--bogus"],
        ["pull", "--bogus"],
        ["drill", "--bogus"],
        ["probe", "--time=3", "-Z"],
    ],
    ids=" ".join,
)
def test_an_unknown_option_is_named_even_when_a_positional_is_missing(
    argv: list[str], run_cli: Callable[..., Run]
) -> None:
    ran = run_cli(*argv)

    assert ran.code == 3
    assert ran.stderr == f"trainguard: error: unrecognized arguments: {argv[-1]}\n"


@pytest.mark.parametrize(
    ("environment", "said"),
    [
        ({"AWS_ENDPOINT_URL": "not a url"}, "the AWS configuration cannot be used to "),
        ({"AWS_DEFAULT_REGION": "us east"}, "'us east' is not a valid AWS region name"),
        ({"AWS_PROFILE": "broken"}, "the AWS configuration cannot be used to "),
    ],
    ids=["endpoint", "region", "credential_process"],
)
@EVERY_AWS_COMMAND
def test_an_aws_setup_that_cannot_work_is_one_line_in_every_command(
    argv: list[str],
    environment: dict[str, str],
    said: str,
    tmp_path: Path,
    isolated_home: Path,
    run_cli: Callable[..., Run],
    aws_credentials: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A profile whose credential_process is missing: AWS CLI users meet it after an SSO tool is uninstalled.
    (isolated_home / "aws-config").write_text("[profile broken]\ncredential_process = /nonexistent/helper\n")
    if "AWS_PROFILE" in environment:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    argv = [str(tmp_path / "pulled") if word == "DEST" else word for word in argv]

    ran = run_cli(*argv)

    assert ran.code == 3
    assert ran.stderr.startswith("trainguard: error: "), ran.stderr
    assert said in ran.stderr
    assert ran.stderr.count("\n") == 1
