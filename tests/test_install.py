"""`pip install .` in a clean virtual environment, as pipx and uv do on a laptop: one `trainguard` command, and
nothing the laptop does not need.

It runs on Python 3.10 where one is found (the floor), else on this interpreter.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from healthcheck import __version__
from tests.test_python310 import PYTHON310

REPO = Path(__file__).resolve().parent.parent
ONLY_FOR_DEVELOPMENT = ("pulumi", "pulumi-aws", "moto", "mypy", "pytest", "ruff", "awscli", "hypothesis")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the project installed from the checkout (not editable); its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([str(PYTHON310 or sys.executable), "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv / "bin"


@pytest.mark.timeout(900)
def test_one_command_answers_from_any_folder(installed: Path, tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    version = run(str(installed / "trainguard"), "--version")
    probe_help = run(str(installed / "trainguard"), "probe", "--help")
    module_help = run(str(installed / "python"), "-m", "healthcheck", "probe", "--help")

    assert (version.returncode, version.stdout) == (0, f"trainguard {__version__}\n")
    assert probe_help.returncode == 0 and probe_help.stdout.startswith("usage: trainguard probe")
    assert module_help.returncode == 0 and module_help.stdout == probe_help.stdout


@pytest.mark.timeout(900)
def test_the_laptops_install_holds_no_development_tools_and_no_pulumi_program(installed: Path) -> None:
    frozen = subprocess.run(
        [str(installed / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=60, check=True
    )
    names = {re.split(r"==| @ ", line)[0].lower() for line in frozen.stdout.splitlines()}
    importable = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util as u; print([u.find_spec(n) for n in ('infra', 'drill')])",
        ],
        cwd=installed,  # not the checkout, where both are
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert not names & set(ONLY_FOR_DEVELOPMENT), sorted(names & set(ONLY_FOR_DEVELOPMENT))
    assert {"paramiko", "boto3", "tenacity", "rich", "trainguard"} <= names
    assert importable.stdout.strip() == "[None, None]"  # they run from a checkout only
