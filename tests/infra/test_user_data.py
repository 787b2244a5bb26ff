"""The bootstrap user data and the on-instance scripts: cloud-init accepts them, and they behave.

The scripts run against stub commands in a temporary directory: nothing here
touches the machine's own /etc, systemd or network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra.aws_rules import MAX_USER_DATA_BYTES
from infra.bundle import USERDATA_DIR, fetch_and_apply
from infra.user_data import cloud_config, user_data
from tests.conftest import write_bundle_env

VOLUME_ID = "vol-0123456789abcdef0"
INSTANCE_ID = "i-0123456789abcdef0"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:trainguard-alerts"


def _user_data() -> str:
    return user_data("trainguard-results-x", VOLUME_ID, "eu-west-1", "0123456789abcdef", TOPIC_ARN)


def test_cloud_config_passes_cloud_init_schema(tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.skip("Debian's cloud-init is not installed (make test installs it in CI)")
    path = tmp_path / "user-data"
    path.write_text(_user_data())

    checked = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Valid cloud-config" in checked.stdout


def test_cloud_init_schema_would_catch_a_broken_document(tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.skip("Debian's cloud-init is not installed (make test installs it in CI)")
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nruncmd: 3\n")

    checked = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )

    assert checked.returncode != 0


def test_user_data_is_a_short_bootstrap() -> None:
    text = user_data("trainguard-results-" + "x" * 40, VOLUME_ID, "ap-southeast-2", "0123456789abcdef", TOPIC_ARN)

    assert len(text.encode()) < MAX_USER_DATA_BYTES / 8
    assert "amazon-cloudwatch-agent" not in text  # the agent and its configs come in the bundle


def test_per_instance_values_travel_in_the_environment_file_and_the_bundle_is_applied_once() -> None:
    config = cloud_config("trainguard-results-x", VOLUME_ID, "eu-west-1", "0123456789abcdef", TOPIC_ARN)
    (env,) = config["write_files"]

    assert env["path"] == "/etc/trainguard/env"
    assert env["content"] == (
        f"TRAINGUARD_BUCKET=trainguard-results-x\nTRAINGUARD_DATA_VOLUME_ID={VOLUME_ID}\nTRAINGUARD_REGION=eu-west-1\n"
        f"TRAINGUARD_TOPIC_ARN={TOPIC_ARN}\n"
    )
    assert config["runcmd"] == [["sh", "-c", fetch_and_apply("0123456789abcdef")]]


def test_results_are_pushed_every_five_minutes_with_the_region_and_protected_memory() -> None:
    timer = (USERDATA_DIR / "trainguard-push-results.timer").read_text()
    service = (USERDATA_DIR / "trainguard-push-results.service").read_text()
    push = (USERDATA_DIR / "trainguard-push").read_text()

    settings = [line for line in timer.splitlines() if "=" in line and not line.startswith("#")]
    assert "OnUnitInactiveSec=5min" in settings and "OnBootSec=2min" in settings
    assert not [line for line in settings if line.startswith("Persistent=")]  # a no-op on monotonic timers
    assert "Slice=system.slice" in service.splitlines()
    assert any(line.startswith("MemoryMin=") for line in service.splitlines())
    assert "ExecStart=/usr/local/bin/trainguard-push --wait 60 --timeout 170" in service.splitlines()
    assert "AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${TRAINGUARD_REGION:-" in push


def _stub(bin_dir: Path, name: str, body: str) -> None:
    stub = bin_dir / name
    stub.write_text(f"#!/bin/sh\n{body}\n")
    stub.chmod(0o755)


def _run_install_agent(
    tmp_path: Path, *, on_ec2: bool, installed: bool, nvidia_smi: str | None = None
) -> tuple[str, int]:
    """Run trainguard-install-agent with stub IMDS, agent, curl, apt-get and nvidia-smi; returns what they saw."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.write_text("")
    ctl = tmp_path / "amazon-cloudwatch-agent-ctl"
    if installed:
        _stub(tmp_path, ctl.name, f'echo "ctl $*" >>{calls}')
    imds = tmp_path / "imds"
    _stub(tmp_path, imds.name, f'echo "imds $*" >>{calls}; ' + ("echo eu-west-1" if on_ec2 else "exit 7"))
    _stub(bin_dir, "curl", f'echo "curl $*" >>{calls}')
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >>{calls}')
    if nvidia_smi is not None:
        _stub(bin_dir, "nvidia-smi", nvidia_smi)
    script = (USERDATA_DIR / "trainguard-install-agent").read_text()
    script = script.replace("ctl=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl", f"ctl={ctl}")
    runner = tmp_path / "install-agent"
    runner.write_text(script)
    bundle_env = write_bundle_env(tmp_path / "bundle.env", TRAINGUARD_IMDS=imds)

    run = subprocess.run(
        ["sh", str(runner)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TRAINGUARD_BUNDLE_ENV": str(bundle_env)},
    )

    return calls.read_text() + run.stdout, run.returncode


@pytest.mark.parametrize(
    ("nvidia_smi", "expected"),
    [("exit 0", "trainguard-gpu.json"), (None, "trainguard-base.json"), ("exit 9", "trainguard-base.json")],
)
def test_agent_gets_the_gpu_config_only_where_nvidia_smi_works(
    tmp_path: Path, nvidia_smi: str | None, expected: str
) -> None:
    record, code = _run_install_agent(tmp_path, on_ec2=True, installed=True, nvidia_smi=nvidia_smi)

    assert code == 0
    assert f"ctl -a fetch-config -m ec2 -s -c file:/opt/aws/amazon-cloudwatch-agent/etc/{expected}\n" in record


def test_agent_install_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    record, _ = _run_install_agent(tmp_path, on_ec2=True, installed=False)  # the stub installs no agent

    assert "apt-get install -y -o DPkg::Lock::Timeout=300 /tmp/amazon-cloudwatch-agent.deb" in record
    assert "dpkg -i" not in (USERDATA_DIR / "trainguard-install-agent").read_text()


def test_off_ec2_the_agent_step_says_it_skipped_and_succeeds(tmp_path: Path) -> None:
    record, code = _run_install_agent(tmp_path, on_ec2=False, installed=True)

    assert code == 0
    assert "not on EC2" in record
    assert "ctl " not in record and "curl " not in record


def _run_record_boot(tmp_path: Path, env: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run trainguard-record-boot with a stub `aws` and IMDS; returns what `aws` was asked, and the run."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.write_text("")
    _stub(bin_dir, "aws", f'echo "AWS_MAX_ATTEMPTS=$AWS_MAX_ATTEMPTS aws $*" >>{calls}')
    imds = tmp_path / "imds"
    _stub(tmp_path, imds.name, 'case "$1" in *instance-id) echo i-0fedcba9876543210;; *) echo us-east-2;; esac')
    env_file = tmp_path / "env"
    env_file.write_text(env)
    bundle_env = write_bundle_env(tmp_path / "bundle.env", TRAINGUARD_ENV_FILE=env_file, TRAINGUARD_IMDS=imds)
    run = subprocess.run(
        ["sh", str(USERDATA_DIR / "trainguard-record-boot")],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TRAINGUARD_BUNDLE_ENV": str(bundle_env)},
    )
    return calls.read_text(), run


def _kernel_boot_time() -> str:
    (line,) = [line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")]
    return line.split()[1]


def test_each_boot_is_recorded_in_the_instances_own_tag_at_the_kernels_boot_time(tmp_path: Path) -> None:
    asked, run = _run_record_boot(tmp_path, "TRAINGUARD_REGION=eu-west-1\n")

    assert run.returncode == 0, run.stderr
    assert asked == (
        "AWS_MAX_ATTEMPTS=2 aws ec2 create-tags --region eu-west-1 --cli-connect-timeout 5 --cli-read-timeout 10 "
        f"--resources i-0fedcba9876543210 --tags Key=trainguard:booted,Value={_kernel_boot_time()}\n"
    )


def test_the_boot_record_names_the_instance_the_env_file_names_and_asks_imds_for_a_missing_region(
    tmp_path: Path,
) -> None:
    asked, run = _run_record_boot(tmp_path, f"TRAINGUARD_INSTANCE_ID={INSTANCE_ID}\n")

    assert run.returncode == 0, run.stderr
    assert "--region us-east-2 " in asked and f"--resources {INSTANCE_ID} " in asked


def test_off_ec2_the_boot_is_not_recorded_and_nothing_fails(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "aws", "exit 99")
    imds = tmp_path / "imds"
    _stub(tmp_path, imds.name, "exit 7")
    env_file = tmp_path / "env"
    env_file.write_text("")
    bundle_env = write_bundle_env(tmp_path / "bundle.env", TRAINGUARD_ENV_FILE=env_file, TRAINGUARD_IMDS=imds)

    run = subprocess.run(
        ["sh", str(USERDATA_DIR / "trainguard-record-boot")],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TRAINGUARD_BUNDLE_ENV": str(bundle_env)},
    )

    assert run.returncode == 0
    assert "not on EC2" in run.stdout
