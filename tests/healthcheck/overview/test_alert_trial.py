"""`trainguard status --test-alarm`: an alert email through the stack's real topic, ALARM then OK, that reboots,
snapshots and spends nothing; moto's alarms run their actions here (tests/support/alarm_actions.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthcheck import contract
from tests.conftest import Run
from tests.healthcheck.overview.conftest import EMAIL, STACK, Deployed
from tests.support.alarm_actions import AlarmActions, alarm_actions

REPO = Path(__file__).resolve().parents[3]
TEST_ALARM = contract.stack_alarm_name(STACK, contract.TEST_ALARM_KEY)


@pytest.fixture
def actions(deployed: Deployed) -> Iterator[AlarmActions]:
    with alarm_actions() as running:
        yield running


def remediated_nothing(deployed: Deployed, instance_id: str) -> None:
    (instance,) = deployed.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert instance["State"]["Name"] == "running"
    assert contract.HISTORY_TAG_KEY not in {tag["Key"] for tag in instance.get("Tags", [])}
    assert deployed.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


def test_a_test_alarm_emails_alarm_then_ok_through_the_topic_and_remediates_nothing(
    deployed: Deployed, actions: AlarmActions, run_cli: Callable[..., Run]
) -> None:
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)
    deployed.inbox()  # the OK emails of the instance's alarms coming up

    ran = run_cli("status", "--stack", STACK, "--test-alarm")

    assert ran.code == 0, ran.stderr
    assert f"Look for 'ALARM: \"{TEST_ALARM}\"'" in ran.stdout and EMAIL in ran.stdout
    emails = deployed.inbox()
    assert [(email["AlarmName"], email["NewStateValue"]) for email in emails] == [
        (TEST_ALARM, "ALARM"),
        (TEST_ALARM, "OK"),
    ]
    assert all(email["AlarmDescription"].startswith("TEST of trainguard's alert email") for email in emails)
    assert all(email["NewStateReason"].startswith("TEST by ") for email in emails)
    assert actions.invoked == []  # the auto-reboot function never heard of it
    remediated_nothing(deployed, instance_id)
    assert deployed.cloudwatch.describe_alarms(AlarmNames=[TEST_ALARM])["MetricAlarms"] == []


def test_the_stacks_own_ssh_alarm_would_invoke_the_auto_reboot_function(
    deployed: Deployed, actions: AlarmActions
) -> None:
    """The control: what the test alarm is shown not to do, a real alarm does here."""
    instance_id = deployed.launch("127.0.0.21")

    deployed.set_alarm(instance_id, contract.SSH_ALARM_KEY, "ALARM")

    assert [invocation.function_arn for invocation in actions.invoked] == [deployed.function_arn]
    assert [email["AlarmName"] for email in deployed.inbox()] == [
        contract.instance_alarm_name(STACK, instance_id, contract.SSH_ALARM_KEY)
    ]


def test_a_pending_subscription_is_told_that_the_test_reaches_it_not(
    deployed: Deployed, actions: AlarmActions, run_cli: Callable[..., Run]
) -> None:
    deployed.watched(deployed.launch("127.0.0.21"))
    deployed.subscription_pending(EMAIL)

    ran = run_cli("status", "--stack", STACK, "--test-alarm")

    assert ran.code == 1
    assert f"{EMAIL} has not confirmed its subscription, so it gets nothing" in ran.stderr


def test_a_stack_without_a_topic_cannot_send_a_test(deployed: Deployed, run_cli: Callable[..., Run]) -> None:
    deployed.launch("127.0.0.21", alarms=False)

    ran = run_cli("status", "--stack", STACK, "--test-alarm")

    assert ran.code == 3
    assert ran.stderr.startswith(f"trainguard: error: no alert topic found for stack {STACK} in eu-west-1")


def test_ctrl_c_while_the_test_alarm_fires_deletes_it_at_once(deployed: Deployed, actions: AlarmActions) -> None:
    deployed.watched(deployed.launch("127.0.0.21"))
    sending = subprocess.Popen(
        [sys.executable, "-m", "healthcheck", "status", "--stack", STACK, "--test-alarm"],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(email["NewStateValue"] == "ALARM" for _, email in actions.published):
            assert time.monotonic() < deadline and sending.poll() is None, sending.communicate()
            time.sleep(0.05)
        sending.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = sending.communicate(timeout=10)
        took = time.monotonic() - interrupted
    finally:
        sending.kill()

    assert sending.returncode == 130 and "interrupted by SIGINT (Ctrl-C)" in stderr
    assert took < 2, f"{took:.1f} s"
    assert deployed.cloudwatch.describe_alarms(AlarmNames=[TEST_ALARM])["MetricAlarms"] == []
