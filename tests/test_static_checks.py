"""ruff and mypy report nothing: run as tests so that CI, which runs `make test`, holds the code to them.

mypy checks infra/ against pulumi_aws's own type hints, so a wrong argument
name or type in a resource fails here, before `pulumi up` could.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_static_checks_report_nothing(command: list[str]) -> None:
    checked = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
