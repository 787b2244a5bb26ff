"""Scenario 3's host side without a VM: the stack's alarm rule, and the real auto-reboot handler against moto
with RebootInstances and GetConsoleOutput wired to a VM (here a stand-in that records monitor commands)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, cast

import pytest

from healthcheck.drill import recovery
from healthcheck.drill.local_aws import BUCKET, LocalAws
from healthcheck.drill.qemu import Vm
from healthcheck.lambdas import auto_reboot
from healthcheck.remediation.actions import Clients, Remediator
from healthcheck.remediation.policy import RemediationSettings
from infra.detection import Detection

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
    clients = Clients(aws.region, ec2=ec2, s3=aws.client("s3"), sns=aws.client("sns"))
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
