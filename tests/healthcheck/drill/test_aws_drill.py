"""`trainguard drill i-...` against moto: refusal, confirmation, the SSM freeze, the watched timeline."""

from __future__ import annotations

import argparse
import re
import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck import contract
from healthcheck.drill import aws
from healthcheck.drill.aws import AwsDrill, Observations
from healthcheck.drill.command import run_drill
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.remediation.actions import Clients, Remediator
from healthcheck.remediation.events import AlarmEvent
from healthcheck.remediation.policy import Action, Entry, RemediationSettings
from infra.detection import Detection, detection_budget
from tests.conftest import StringConsole

REGION = "eu-west-1"
MANAGED = ("trainguard:managed", "true")


class AlarmHistory:
    """moto's CloudWatch with DescribeAlarmHistory, which moto does not implement (NotImplementedError).

    It answers from the alarm states the test sets through SetAlarmState, in
    AWS's item shape; everything else is moto's.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.items: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set_alarm_state(self, at: datetime, name: str, old: str, new: str) -> None:
        self._client.set_alarm_state(AlarmName=name, StateValue=new, StateReason="drill test")
        self.items.append(
            {
                "AlarmName": name,
                "Timestamp": at,
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {old} to {new}",
                "HistoryData": f'{{"oldState": {{"stateValue": "{old}"}}, "newState": {{"stateValue": "{new}"}}}}',
            }
        )

    def describe_alarm_history(self, **kwargs: Any) -> dict[str, Any]:
        chosen = [
            item
            for item in self.items
            if item["AlarmName"] == kwargs["AlarmName"]
            and kwargs["StartDate"] <= item["Timestamp"] <= kwargs["EndDate"]
        ]
        return {"AlarmHistoryItems": chosen}


class World:
    """A deployed instance under moto, a fake clock, and what AWS does as that clock advances."""

    def __init__(self, managed: bool = True) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.cloudwatch = AlarmHistory(boto3.client("cloudwatch", region_name=REGION))
        tags = [{"Key": MANAGED[0], "Value": MANAGED[1]}] if managed else [{"Key": "Name", "Value": "someone's"}]
        self.instance_id = self.ec2.run_instances(
            ImageId="ami-0123456789abcdef0",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
        self.alarm = f"trainguard-{self.instance_id}-ssh-unresponsive"
        self.cloudwatch.put_metric_alarm(
            AlarmName=self.alarm,
            Namespace=contract.CANARY_NAMESPACE,
            MetricName=contract.SSH_RESPONSIVE_METRIC,
            Dimensions=[{"Name": "InstanceId", "Value": self.instance_id}],
            Statistic="Minimum",
            Period=10,
            EvaluationPeriods=6,
            Threshold=1,
            ComparisonOperator="LessThanThreshold",
        )
        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self.frozen_at: datetime | None = None
        self.sshd_frozen = False
        self.script: list[tuple[float, Callable[[], None]]] = []

    def clock(self) -> datetime:
        if self.frozen_at is None and self.ssm.list_commands()["Commands"]:
            self.frozen_at, self.sshd_frozen = self.now, True  # moto runs a command as soon as it is sent
        return self.now

    def sleep(self, seconds: float) -> None:
        """Time passes; what AWS does in that time happens."""
        self.now += timedelta(seconds=seconds)
        due = [
            step for step in self.script if self.frozen_at and self.now >= self.frozen_at + timedelta(seconds=step[0])
        ]
        for step in due:
            self.script.remove(step)
            step[1]()

    def ssh_answers(self, address: str) -> bool:
        return not self.sshd_frozen

    def canary(self, value: float) -> Callable[[], None]:
        def publish() -> None:
            self.cloudwatch.put_metric_data(
                Namespace=contract.CANARY_NAMESPACE,
                MetricData=[
                    {
                        "MetricName": contract.SSH_RESPONSIVE_METRIC,
                        "Dimensions": [{"Name": "InstanceId", "Value": self.instance_id}],
                        "Timestamp": self.now,
                        "Value": value,
                        "StorageResolution": 1,
                    }
                ],
            )

        return publish

    def alarm_fires(self) -> None:
        self.cloudwatch.set_alarm_state(self.now, self.alarm, "OK", "ALARM")

    def function_reboots(self) -> None:
        """The auto-reboot function's real code, on the alarm event, against moto."""
        remediator = Remediator(
            RemediationSettings(boot_grace=timedelta(0)), Clients(ec2=self.ec2), clock=lambda: self.now
        )
        event = AlarmEvent(self.alarm, "ALARM", self.instance_id, self.now.isoformat(), "drill test")
        remediator.handle_alarm(event)

    def sshd_back(self) -> None:
        self.sshd_frozen = False

    def drill(self) -> AwsDrill:
        return AwsDrill(
            self.ec2,
            self.ssm,
            self.cloudwatch,
            self.instance_id,
            MANAGED,
            ssh_answers=self.ssh_answers,
            private_address=True,
            now=self.clock,
            sleep=self.sleep,
        )


@pytest.fixture
def world(aws_credentials: str) -> Iterator[Callable[..., World]]:
    with mock_aws():
        yield World


def args(instance_id: str, *extra: str) -> argparse.Namespace:
    from healthcheck.cli import build_parser

    return build_parser().parse_args(["drill", instance_id, "--private", *extra])


def sent_commands(world: World) -> list[list[str]]:
    return [command["Parameters"]["commands"] for command in world.ssm.list_commands()["Commands"]]


def test_an_unmanaged_instance_is_refused_and_nothing_is_sent(world: Callable[..., World]) -> None:
    unmanaged = world(managed=False)

    with pytest.raises(UsageError, match=r"lacks the tag trainguard:managed=true"):
        run_drill(args(unmanaged.instance_id, "--yes"), StringConsole(), drill=unmanaged.drill())
    assert sent_commands(unmanaged) == []


def test_it_asks_first_and_a_no_sends_nothing(world: Callable[..., World]) -> None:
    deployed = world()
    console = StringConsole("n\n", tty=True)

    code = run_drill(args(deployed.instance_id), console, drill=deployed.drill())

    assert code == 1
    assert "Freeze sshd on" in console.out and "Nothing done." in console.out
    assert sent_commands(deployed) == []
    with pytest.raises(UsageError, match="pass --yes"):
        run_drill(args(deployed.instance_id), StringConsole("y\n"), drill=deployed.drill())


def test_the_whole_chain_is_timed_against_the_budget(world: Callable[..., World]) -> None:
    deployed = world()
    deployed.script = [
        *((float(t), deployed.canary(0.0)) for t in range(10, 70, 10)),
        (72.0, deployed.alarm_fires),
        (78.0, deployed.function_reboots),
        (110.0, deployed.sshd_back),  # the reboot brought a fresh sshd
    ]
    console = StringConsole()

    code = run_drill(args(deployed.instance_id, "--yes", "--thaw-after", "600"), console, drill=deployed.drill())

    text = console.out
    assert code == 0, text
    (commands,) = sent_commands(deployed)
    assert commands.index(next(c for c in commands if "systemd-run" in c)) < commands.index('kill -STOP "$pid"')
    assert "--on-active=600s" in "\n".join(commands)
    assert "canary sample: SSHResponsive=0" in text
    assert "alarm OK -> ALARM" in text
    assert "auto-reboot function: R" in text
    assert "SSH answers" in text
    assert "time to the reboot call" in text
    assert "came within detection_budget_seconds.userspace_freeze = 110s" in text
    figures = {label.strip(): int(value) for label, value in re.findall(r"^(time [^\n]*?) +(\d+)s$", text, re.M)}
    # Each source is polled every 10 s, so an event shows up to one poll after it happened.
    assert 72 <= figures["time to detect (alarm)"] <= 82
    assert 78 <= figures["time to the reboot call"] <= 88
    assert 110 <= figures["time until SSH answers again"] <= 120


def test_no_recovery_within_the_watch_is_critical(world: Callable[..., World]) -> None:
    deployed = world()  # nothing ever fires: the canary is not deployed
    console = StringConsole()

    code = run_drill(
        args(deployed.instance_id, "--yes", "--thaw-after", "60", "--budget", "90"), console, drill=deployed.drill()
    )

    assert code == 2
    assert "time to detect (alarm)         never" in console.out
    assert "NOT within" in console.out


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Terminated(), Terminated(signal.SIGHUP)])
def test_ctrl_c_sigterm_or_a_hangup_while_watching_thaws_sshd_at_once(
    world: Callable[..., World], stop: BaseException
) -> None:
    deployed = world()

    def interrupt() -> None:
        raise stop

    deployed.script = [(20.0, interrupt)]

    with pytest.raises(Interrupted) as interrupted:
        run_drill(args(deployed.instance_id, "--yes"), StringConsole(), drill=deployed.drill())

    assert interrupted.value.cause is stop
    assert interrupted.value.progress == "asked the instance to thaw sshd now"
    freeze, thaw = sent_commands(deployed)
    assert 'kill -STOP "$pid"' in freeze
    assert any("kill -CONT" in line for line in thaw)


def test_the_default_budget_is_the_stacks_default_userspace_freeze_budget() -> None:
    assert detection_budget(Detection())["userspace_freeze"] == aws.DEFAULT_BUDGET_S


def test_the_thaw_is_bounded() -> None:
    with pytest.raises(ValueError, match="within"):
        aws.freeze_commands(aws.MAX_THAW_AFTER_S + 1)


def test_alarm_history_items_are_read_from_their_data_or_their_summary() -> None:
    assert aws.alarm_transition(
        {"HistoryData": '{"oldState": {"stateValue": "OK"}, "newState": {"stateValue": "ALARM"}}'}
    ) == ("OK", "ALARM")
    assert aws.alarm_transition({"HistorySummary": "Alarm updated from ALARM to OK"}) == ("ALARM", "OK")
    assert aws.alarm_transition({"HistorySummary": "Alarm created"}) is None


def test_recovery_counts_only_ssh_answering_after_the_function_acted() -> None:
    frozen = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = lambda seconds: frozen + timedelta(seconds=seconds)  # noqa: E731
    seen = Observations(
        frozen,
        alarm=[(at(75), "OK", "ALARM")],
        decisions=[Entry(at(80), Action.REBOOT, "abcd1234")],
        ssh=[(at(0.5), True), (at(10), False), (at(130), True)],
    )

    result = aws.figures(seen)

    assert (result.detect_s, result.reboot_call_s, result.recover_s) == (75.0, 80.0, 130.0)
    ok, lines = aws.judge(result, budget_s=90)
    assert ok and lines[-1].endswith("= 90s") and "NOT" not in lines[-1]
    assert not aws.judge(result, budget_s=60)[0]
