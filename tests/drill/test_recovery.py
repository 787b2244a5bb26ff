"""Scenario 3's host side without a VM: the stack's alarm rule, and the real auto-reboot handler against moto
with RebootInstances and GetConsoleOutput wired to a VM (here a stand-in that records monitor commands)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pytest

from drill import recovery
from drill.guest import GuestShell
from drill.local_aws import AWS_WRAPPER_PATH, BUCKET, LocalAws
from drill.qemu import Vm
from healthcheck import contract
from healthcheck.lambdas import auto_reboot
from healthcheck.remediation.actions import Clients, Remediator
from healthcheck.remediation.policy import RemediationSettings
from infra.bundle import USERDATA_DIR, bundle_environment
from infra.detection import Detection
from tests.conftest import write_bundle_env

AWS_V1 = Path(sys.executable).parent / "aws"
RULE = recovery.AlarmRule("ssh-unresponsive", period_s=10, evaluation_periods=8, datapoints_to_alarm=6, threshold=1)


def test_the_drill_uses_the_stacks_ssh_alarm_m_of_n() -> None:
    detection = Detection()
    rule = recovery.ssh_alarm_rule()

    assert (rule.period_s, rule.datapoints_to_alarm, rule.evaluation_periods) == (
        detection.canary_interval_s,
        detection.canary_datapoints,
        detection.canary_evaluation_periods,
    )


def test_the_alarm_fires_on_the_mth_failing_slot_of_n_and_not_before() -> None:
    answering = [(float(t), 1.0) for t in range(0, 100, 10)]
    silent = [(float(t), 0.0) for t in range(100, 200, 10)]

    assert recovery.alarm_fires_at(answering, RULE) is None
    assert recovery.alarm_fires_at(answering + silent[:5], RULE) is None
    assert recovery.alarm_fires_at(answering + silent, RULE) == 150.0


def test_missed_slots_do_not_breach_but_do_not_keep_the_alarm_from_firing() -> None:
    # Slots 10 and 12 have no sample (a late invocation): 6 of the 8 slots 7..14 still breach.
    points = [(float(t), 0.0) for t in (70, 80, 90, 110, 130, 140)]

    assert recovery.alarm_fires_at(points, RULE) == 140.0
    assert recovery.alarm_fires_at(points[:-1], RULE) is None


def test_a_slot_counts_its_minimum_so_one_answer_in_a_failing_slot_does_not_save_it() -> None:
    points = [(float(t), 0.0) for t in range(0, 60, 10)]
    points.append((5.0, 1.0))

    assert recovery.alarm_fires_at(points, RULE) == 50.0


class RecordingVm:
    """What the hooks use of a Vm: the monitor, the serial log and the clock."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def monitor(self, command: str, timeout: float = 5.0) -> str:
        self.commands.append(command)
        return ""

    def console_text(self) -> str:
        return "early boot\n" + "[  412.5] Out of memory: Killed process 612 (systemd-journal)\n"

    def elapsed(self) -> float:
        return 123.0


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with LocalAws() as started:
        yield started


def test_the_handler_reboots_the_vm_through_moto_and_keeps_its_serial_console(aws: LocalAws) -> None:
    settings = RemediationSettings(topic_arn=aws.topic_arn, bucket=BUCKET)
    instance_id = recovery.managed_instance(aws, settings.boot_grace)
    vm = RecordingVm()
    reboots: list[float] = []
    ec2 = aws.client("ec2")
    recovery.wire_ec2_to_vm(ec2, cast(Vm, vm), reboots.append)
    clients = Clients(aws.region, ec2=ec2, **{name: aws.client(name) for name in ("s3", "sns", "ssm", "cloudwatch")})
    event = recovery.alarm_event(RULE, instance_id, datetime.now(timezone.utc))

    answer: dict[str, Any] = auto_reboot.handler(event, None, Remediator(settings, clients))

    (handled,) = answer["handled"]
    assert handled["decision"] == "REBOOT", answer
    assert vm.commands == ["system_reset"]
    assert reboots == [123.0]
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"postmortem/{instance_id}/")["Contents"]
    (console_key,) = [item["Key"] for item in listed if item["Key"].endswith("console.txt")]
    kept = aws.object(console_key) or b""
    assert b"Killed process 612 (systemd-journal)" in kept
    assert aws.emails(wait_s=5), "the handler emailed nobody"


def test_detection_counts_from_the_first_failing_sample_in_the_window_that_fired() -> None:
    # As in a real run: failures from 120 s, one banner at 170 s between silences, the rule holds at 180 s.
    points = [(float(t), 1.0) for t in range(70, 120, 10)]
    points += [(float(t), 0.0) for t in (120, 130, 140, 150, 160, 180)] + [(170.0, 1.0)]

    fired = recovery.alarm_fires_at(points, RULE)
    assert fired == 180.0
    assert recovery.first_counted_failure(points, RULE, fired) == 120.0
    # A failure outside the N-slot window is not where this detection began.
    assert recovery.first_counted_failure([(30.0, 0.0), *points], RULE, fired) == 120.0


def test_the_recovery_guest_gets_the_stacks_push_and_its_settings_and_nothing_that_prevents_the_freeze() -> None:
    files = recovery.push_files("i-0123456789abcdef0", BUCKET, "eu-west-1")

    assert set(files) == {
        "/usr/local/bin/trainguard-push",
        contract.BUNDLE_ENV_FILE,
        contract.ENV_FILE,
        AWS_WRAPPER_PATH,
    }
    push = files["/usr/local/bin/trainguard-push"]
    assert (push.content, push.permissions) == ((USERDATA_DIR / "trainguard-push").read_bytes(), "0755")
    assert files[contract.BUNDLE_ENV_FILE].content == bundle_environment()
    assert files[contract.ENV_FILE].content.decode().splitlines() == [
        f"TRAINGUARD_BUCKET={BUCKET}",
        "AWS_DEFAULT_REGION=eu-west-1",
        "TRAINGUARD_INSTANCE_ID=i-0123456789abcdef0",
    ]


class LocalGuest:
    """The guest's half of the push, run here: the stack's trainguard-push with the settings push_files gives
    the guest, /data in a temporary folder, and AWS CLI v1 (the test extras) pointed at LocalAws's moto."""

    def __init__(self, root: Path, aws: LocalAws, instance_id: str) -> None:
        files = recovery.push_files(instance_id, BUCKET, aws.region)
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        script = self.bin / "trainguard-push"
        script.write_bytes(files["/usr/local/bin/trainguard-push"].content)
        script.chmod(0o755)
        (root / "env").write_bytes(files[contract.ENV_FILE].content)
        self.data = root / "data"
        bundle_env = write_bundle_env(
            root / "bundle.env", TRAINGUARD_ENV_FILE=root / "env", TRAINGUARD_RESULTS_DIR=self.data / "results"
        )
        self.env = {
            "PATH": f"{self.bin}:{AWS_V1.parent}:/usr/bin:/bin",
            "HOME": str(root),
            "TRAINGUARD_BUNDLE_ENV": str(bundle_env),
            "TRAINGUARD_SYSTEMD_DIR": str(root / "no-systemd"),
            "AWS_ENDPOINT_URL": aws.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def write_result(self, body: bytes) -> str:
        path = self.data / Path(recovery.RESULTS).relative_to(contract.DATA_MOUNT)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return hashlib.sha256(body).hexdigest()

    def run(self, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", command], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


def push_and_pull(aws: LocalAws, guest: LocalGuest, dest: Path, digest: str) -> tuple[bool, list[str]]:
    notes: list[str] = []
    same = recovery._push_and_pull(
        cast(GuestShell, guest), aws, INSTANCE, dest, digest, lambda: 1.0, lambda at, text: notes.append(text)
    )
    return same, notes


INSTANCE = "i-0123456789abcdef0"


def test_results_pushed_by_the_guest_and_pulled_on_the_host_are_the_ones_written_before_the_freeze(
    aws: LocalAws, tmp_path: Path
) -> None:
    guest = LocalGuest(tmp_path / "guest", aws, INSTANCE)
    digest = guest.write_result(b"epoch 3\n" * 10_000)

    same, notes = push_and_pull(aws, guest, tmp_path / "pulled", digest)

    assert same, notes
    assert (tmp_path / "pulled" / INSTANCE / "checkpoint-epoch-3.txt").read_bytes() == b"epoch 3\n" * 10_000
    assert "has the sha256 it had before the freeze" in notes[-1]


def test_a_result_that_changed_after_the_freeze_is_not_called_intact(aws: LocalAws, tmp_path: Path) -> None:
    guest = LocalGuest(tmp_path / "guest", aws, INSTANCE)
    digest = guest.write_result(b"epoch 3\n")
    guest.write_result(b"epoch 3, truncated")

    same, notes = push_and_pull(aws, guest, tmp_path / "pulled", digest)

    assert not same
    assert "is MISSING or DIFFERENT" in notes[-1]


def test_a_failed_push_is_reported_and_nothing_is_called_intact(aws: LocalAws, tmp_path: Path) -> None:
    guest = LocalGuest(tmp_path / "guest", aws, INSTANCE)
    digest = guest.write_result(b"epoch 3\n")
    guest.env["TRAINGUARD_BUCKET"] = "trainguard-no-such-bucket"

    same, notes = push_and_pull(aws, guest, tmp_path / "pulled", digest)

    assert not same
    assert notes[-1].startswith("trainguard-push FAILED (status 1)"), notes
    assert not (tmp_path / "pulled").exists()
