"""The files the instance gets: earlyoom accepts its arguments, units run the guard's modules, and nothing sets
OOMScoreAdjust=-1000 (children of sshd would inherit it: the VM drill froze and panicked)."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess

import pytest

from healthcheck import contract
from infra.bundle import UNITS as UNIT_DIR
from infra.bundle import bundle_files

INSTALLED = {file.path: file.content.decode() for file in bundle_files() if not file.path.endswith(".zip")}
UNITS = ("trainguard.slice", "trainguard-training.slice", "trainguard-guard.service", "trainguard-psi.service")


def unit(name: str) -> configparser.ConfigParser:
    """A unit as the bundle installs it (its placeholders filled in)."""
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(INSTALLED[f"{UNIT_DIR}/{name}"])
    return parser


def earlyoom_args() -> list[str]:
    text = INSTALLED["/etc/default/earlyoom"]
    value = re.search(r'^EARLYOOM_ARGS="(.*)"$', text, re.MULTILINE)
    assert value is not None
    assert "'" not in value.group(1), "systemd passes quotes in $EARLYOOM_ARGS through literally"
    return value.group(1).split()  # as systemd splits $EARLYOOM_ARGS


def test_earlyoom_prefers_training_and_avoids_the_system() -> None:
    args = earlyoom_args()
    prefer = re.compile(args[args.index("--prefer") + 1])
    avoid = re.compile(args[args.index("--avoid") + 1])

    for name in ("python", "python3", "python3.10", "pt_main_thread", "torchrun"):
        assert prefer.search(name) and not avoid.search(name), name
    # process names as the kernel keeps them: at most 15 characters
    for name in ("sshd", "systemd", "systemd-journal", "amazon-cloudwat", "amazon-ssm-agen", "trainguard-push", "aws"):
        assert avoid.search(name) and not prefer.search(name), name


def test_earlyoom_accepts_the_arguments() -> None:
    if not shutil.which("earlyoom"):
        pytest.skip("earlyoom not installed (apt-get install earlyoom)")
    try:
        done = subprocess.run(
            ["earlyoom", "--dryrun", *earlyoom_args()], capture_output=True, text=True, timeout=2, check=False
        )
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as running:  # it runs until stopped: arguments accepted
        output = (running.stdout or b"").decode() + (running.stderr or b"").decode()

    assert "Preferring to kill process names that match regex '^(python|" in output
    assert "Will avoid killing process names that match regex '^(sshd|" in output
    assert "sending SIGTERM when mem <=  5.00%" in output


@pytest.mark.parametrize("name", UNITS)
def test_units_parse_and_never_set_oom_score_adjust_minus_1000(name: str) -> None:
    parser = unit(name)

    assert "Unit" in parser
    for section in parser.values():
        assert section.get("OOMScoreAdjust", "0") != "-1000"


@pytest.mark.parametrize(
    ("name", "module"), [("trainguard-guard.service", "notify"), ("trainguard-psi.service", "psi")]
)
def test_services_run_the_guard_from_the_bundle(name: str, module: str) -> None:
    parser = unit(name)

    assert shlex.split(parser["Service"]["ExecStart"]) == ["/usr/bin/python3", "-m", f"healthcheck.guard.{module}"]
    assert parser["Service"]["Environment"] == f"PYTHONPATH={contract.PACKAGE_ZIP}"
    assert parser["Service"]["Restart"] == "always"


def test_the_training_slice_weighs_less_than_the_system() -> None:
    parser = unit(contract.TRAINING_SLICE)

    assert int(parser["Slice"]["CPUWeight"]) < 100  # systemd's default weight, system.slice's
    assert int(parser["Slice"]["IOWeight"]) < 100
    assert parser["Slice"]["TasksMax"]
