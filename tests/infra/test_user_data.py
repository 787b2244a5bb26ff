"""User data: cloud-init accepts the cloud-config, shellcheck accepts the scripts, EC2 accepts the size."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra.user_data import MAX_USER_DATA_BYTES, SCRIPTS, USERDATA_DIR, cloud_config, user_data

VOLUME_ID = "vol-0123456789abcdef0"


def test_cloud_config_passes_cloud_init_schema(tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.skip("Debian's cloud-init is not installed (make test installs it in CI)")
    path = tmp_path / "user-data"
    path.write_text(user_data("trainguard-results-x", VOLUME_ID))

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


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    checked = subprocess.run(
        ["shellcheck", "--shell=sh", "--severity=style", str(USERDATA_DIR / script)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout


def test_user_data_fits_ec2s_limit() -> None:
    assert len(user_data("trainguard-results-" + "x" * 40, VOLUME_ID).encode()) <= MAX_USER_DATA_BYTES


def test_per_instance_values_travel_in_the_environment_file() -> None:
    files = {f["path"]: f for f in cloud_config("trainguard-results-x", VOLUME_ID)["write_files"]}

    assert files["/etc/trainguard/env"]["content"] == (
        f"TRAINGUARD_BUCKET=trainguard-results-x\nTRAINGUARD_DATA_VOLUME_ID={VOLUME_ID}\nTRAINGUARD_DATA_MOUNT=/data\n"
    )
    for script in SCRIPTS:
        assert files[f"/usr/local/sbin/{script}"]["permissions"] == "0755"


def test_results_are_pushed_every_five_minutes_by_a_systemd_timer() -> None:
    config = cloud_config("b", VOLUME_ID)
    files = {f["path"]: f["content"] for f in config["write_files"]}

    timer = files["/etc/systemd/system/trainguard-push-results.timer"]
    assert "OnUnitActiveSec=5min" in timer
    assert ["systemctl", "enable", "--now", "trainguard-push-results.timer"] in config["runcmd"]
    push = files["/usr/local/sbin/trainguard-push-results"]
    assert "aws s3 sync" in push and "s3://$TRAINGUARD_BUCKET/$instance_id/" in push


def _run_mount_script(tmp_path: Path, blkid_finds_filesystem: bool) -> str:
    """Run trainguard-mount-data against stub commands, recording what it calls."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    device = tmp_path / "by-id-device"
    stubs = {
        "blkid": f'echo "blkid $*" >>{calls}; '
        + (
            'case "$*" in *UUID*) echo 1234-abcd;; *TYPE*) echo ext4;; esac; exit 0'
            if blkid_finds_filesystem
            else 'case "$*" in *UUID*) echo 1234-abcd;; *TYPE*) echo ext4;; *) exit 2;; esac'
        ),
        "mkfs.ext4": f'echo "mkfs.ext4 $*" >>{calls}',
        "mountpoint": "exit 1",
        "mount": f'echo "mount $*" >>{calls}',
    }
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env_file, fstab = tmp_path / "env", tmp_path / "fstab"
    fstab.write_text("")
    env_file.write_text(f"TRAINGUARD_DATA_VOLUME_ID={VOLUME_ID}\nTRAINGUARD_DATA_MOUNT={tmp_path / 'data'}\n")
    script = (USERDATA_DIR / "trainguard-mount-data").read_text()
    script = script.replace("/etc/trainguard/env", str(env_file)).replace("/etc/fstab", str(fstab))
    # A regular file stands in for the block device; `-b` becomes `-e` for it.
    script = script.replace('for candidate in "$by_id"', f'for candidate in "{device}"').replace("[ -b ", "[ -e ")
    device.write_text("")
    runner = tmp_path / "mount-data"
    runner.write_text(script)
    subprocess.run(["sh", str(runner)], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return calls.read_text() + fstab.read_text()


def test_a_blank_data_volume_is_formatted_and_mounted_by_uuid(tmp_path: Path) -> None:
    record = _run_mount_script(tmp_path, blkid_finds_filesystem=False)

    assert "mkfs.ext4 -q -L trainguard-data" in record
    assert f"UUID=1234-abcd {tmp_path / 'data'} ext4 defaults,nofail" in record


def test_a_data_volume_with_a_filesystem_is_never_formatted(tmp_path: Path) -> None:
    record = _run_mount_script(tmp_path, blkid_finds_filesystem=True)

    assert "mkfs" not in record
    assert f"mount {tmp_path / 'data'}" in record


def test_boot_mounts_data_then_starts_the_agent_then_the_results_timer() -> None:
    assert cloud_config("b", VOLUME_ID)["runcmd"] == [
        ["/usr/local/sbin/trainguard-mount-data"],
        ["/usr/local/sbin/trainguard-install-agent"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "trainguard-push-results.timer"],
    ]


@pytest.mark.parametrize(
    ("nvidia_smi", "expected"),
    [("exit 0", "trainguard-gpu.json"), (None, "trainguard-base.json"), ("exit 9", "trainguard-base.json")],
)
def test_agent_gets_the_gpu_config_only_where_nvidia_smi_works(
    tmp_path: Path, nvidia_smi: str | None, expected: str
) -> None:
    """Run trainguard-install-agent with a stub agent already installed and nvidia-smi present, absent or broken."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    ctl = tmp_path / "amazon-cloudwatch-agent-ctl"
    ctl.write_text(f'#!/bin/sh\necho "$*" >>{calls}\n')
    ctl.chmod(0o755)
    if nvidia_smi is not None:
        stub = bin_dir / "nvidia-smi"
        stub.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        stub.chmod(0o755)
    script = (USERDATA_DIR / "trainguard-install-agent").read_text()
    script = script.replace("ctl=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl", f"ctl={ctl}")
    runner = tmp_path / "install-agent"
    runner.write_text(script)

    subprocess.run(["sh", str(runner)], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})

    assert calls.read_text() == (f"-a fetch-config -m ec2 -s -c file:/opt/aws/amazon-cloudwatch-agent/etc/{expected}\n")
