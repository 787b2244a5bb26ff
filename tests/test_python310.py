"""Python 3.10 is the floor: the instances' system Python (Ubuntu 22.04) runs the package, standard library only.

Two checks: vermin finds nothing newer than 3.10 anywhere in the repository (it needs no 3.10 interpreter),
and, where one exists, a real 3.10 runs the `trainguard` wrapper from a zip of the package as the instance
installs it. CI on a clean Debian has no 3.10: those tests skip with the reason and vermin still guards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.lambda_package import package_zip
from tests.conftest import write_bundle_env

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USERDATA = REPO / "infra" / "userdata"


def find_python_310() -> Path | None:
    """TRAINGUARD_PYTHON310, else a python3.10 on PATH that runs, else one that pyenv installed; None if none."""
    candidates = [os.environ.get("TRAINGUARD_PYTHON310"), shutil.which("python3.10")]
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()
        candidates += sorted(str(path) for path in Path(root or "/nonexistent").glob("versions/3.10*/bin/python3.10"))
    for candidate in filter(None, candidates):
        ran = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if ran.stdout.strip() == "True":
            return Path(candidate)
    return None


PYTHON310 = find_python_310()
SAMPLES = REPO / "tests" / "healthcheck" / "guard" / "samples"


def vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "vermin"), "-t=3.10-", "--violations", "--no-tips", "--eval-annotations", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_vermin_finds_nothing_newer_than_python_310() -> None:
    """The package, the Pulumi program, the drill, the tests and the benchmarks: all of it runs on 3.10."""
    checked = vermin(*(REPO / folder for folder in ("healthcheck", "infra", "drill", "tests", "benchmarks")))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_vermin_would_catch_a_311_only_name(tmp_path: Path) -> None:
    newer = tmp_path / "newer.py"
    newer.write_text("from datetime import UTC\nimport tomllib\n")

    assert vermin(newer).returncode != 0


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip the on-instance bundle installs as /opt/trainguard/healthcheck.zip, byte for byte."""
    path = tmp_path_factory.mktemp("bundle") / "healthcheck.zip"
    path.write_bytes(package_zip())
    return path


def need_python_310() -> Path:
    if PYTHON310 is None:
        pytest.skip(
            "no Python 3.10: none on PATH, none from pyenv, TRAINGUARD_PYTHON310 unset; vermin still checks 3.10"
        )
    return PYTHON310


def run_310(script: str, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    python = need_python_310()
    bundle_env = write_bundle_env(bundle.with_name("bundle.env"), TRAINGUARD_ZIP=bundle)
    environment = {
        "PATH": "/usr/bin:/bin",
        "TRAINGUARD_BUNDLE_ENV": str(bundle_env),
        "TRAINGUARD_PYTHON": str(python),
    }
    return subprocess.run(
        ["sh", str(USERDATA / script), *args], capture_output=True, text=True, env=environment, check=False, timeout=60
    )


def test_trainguard_launch_help_on_python_310_from_the_zip(bundle_zip: Path) -> None:
    done = run_310("trainguard", bundle_zip, "launch", "--help")

    assert done.returncode == 0, done.stderr
    assert "--canary-seconds" in done.stdout


def test_launch_status_on_python_310_imports_nothing_outside_the_standard_library(bundle_zip: Path) -> None:
    # As on an instance: the bundle is installed (any existing file stands for its bundle.env here).
    probe = (
        "from pathlib import Path; from healthcheck.cli import build_parser; from healthcheck.console import Console;"
        "from healthcheck.guard import launch; from healthcheck.guard.host import Host;"
        "argv = ['launch', '--status']; args = build_parser(argv).parse_args(argv);"
        f"code = launch.run_launch(args, Console(), Host(bundle_env=Path({str(bundle_zip)!r})));"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'paramiko', 'boto3', 'botocore', 'tenacity'});"
        "print('THIRD-PARTY', bad); sys.exit(code)"
    )
    python = need_python_310()
    done = subprocess.run(
        [str(python), "-I", "-c", f"import sys; sys.path.insert(0, {str(bundle_zip)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert "THIRD-PARTY []" in done.stdout, done.stdout + done.stderr
    assert "trainguard-training.slice:" in done.stdout


def test_the_guards_pure_functions_and_the_slice_setup_run_on_python_310(bundle_zip: Path, tmp_path: Path) -> None:
    done = run_310(
        "trainguard-setup-slice",
        bundle_zip,
        "--root",
        str(tmp_path),
        "--meminfo",
        str(SAMPLES / "proc-meminfo.debian12-24g.txt"),
    )

    assert done.returncode == 0, done.stderr
    assert "MemoryMax = RAM - reserve" in done.stdout
    assert (tmp_path / "etc/systemd/system/trainguard-training.slice.d/50-memory.conf").exists()
    fit_check = subprocess.run(
        [
            str(need_python_310()),
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(bundle_zip)!r});"
            "from healthcheck.guard import fit, notify, psi, readings;"
            "r = fit.fit_workers(canary_peak=4194304000, canary_gpu_mib=5120, headroom=0.2,"
            " slice_memory_max=fit.slice_limits(16 * fit.GIB).memory_max, gpus=[readings.GpuMemory(23028, 0)]);"
            "print(r.workers, psi.statsd_datagrams(readings.Pressure(1.0, 2.0)));"
            "print(notify.kill_from_journal({'MESSAGE_ID': notify.UNIT_FAILURE_RESULT, 'UNIT_RESULT': 'oom-kill',"
            " 'UNIT': 'trainguard-worker-1.service'}))",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert fit_check.returncode == 0, fit_check.stderr
    assert fit_check.stdout.startswith("3 [b'trainguard_memory_pressure_some_avg10:1.00|g'")
    assert "worker=1" in fit_check.stdout
