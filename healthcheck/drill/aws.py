"""The drill against a deployed instance: freeze sshd through SSM, then watch trainguard detect and recover it.

The freeze is SIGSTOP on sshd's listener, the incident's signature (the port
stays open, no banner comes). A systemd timer on the instance sends SIGCONT
after a bounded time whatever happens, so the drill can never leave a host
frozen for good. The timeline is assembled by pure functions from what the
AWS APIs say; the clients, the clock and the SSH check are injected.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from healthcheck import contract
from healthcheck.remediation.policy import Entry, decode_history

THAW_UNIT = "trainguard-drill-thaw"
# The stack's detection_budget_seconds["userspace_freeze"] with its default
# settings (infra/detection.py; a test keeps the two equal).
DEFAULT_BUDGET_S = 110
DEFAULT_THAW_AFTER_S = 600
MAX_THAW_AFTER_S = 3600


class DrillRefused(Exception):
    """The drill will not run against this instance; the message says why."""


def freeze_commands(thaw_after_s: int) -> list[str]:
    """The SSM shell commands: arm the thaw first (no thaw, no freeze), then SIGSTOP sshd's listener."""
    if not 1 <= thaw_after_s <= MAX_THAW_AFTER_S:
        raise ValueError(f"the thaw must come within 1..{MAX_THAW_AFTER_S}s, not {thaw_after_s}")
    return [
        "set -eu",
        "pid=$(systemctl show --property MainPID --value ssh.service)",
        '[ "${pid:-0}" -gt 0 ] || { echo "ssh.service has no running sshd" >&2; exit 1; }',
        f"systemctl stop {THAW_UNIT}.timer 2>/dev/null || true",
        f'systemd-run --quiet --unit={THAW_UNIT} --on-active={thaw_after_s}s /bin/kill -CONT "$pid"',
        'kill -STOP "$pid"',
        f'echo "sshd $pid stopped; it is thawed in {thaw_after_s}s at the latest"',
    ]


def thaw_commands() -> list[str]:
    """Thaw now (the drill was interrupted); harmless when sshd runs or the host rebooted."""
    return [
        "pid=$(systemctl show --property MainPID --value ssh.service)",
        '[ "${pid:-0}" -gt 0 ] && kill -CONT "$pid"',
        f"systemctl stop {THAW_UNIT}.timer 2>/dev/null || true",
    ]


@dataclass
class Observations:
    """What the drill saw, as absolute times; the timeline is computed from it."""

    freeze_at: datetime
    canary: dict[datetime, float] = field(default_factory=dict)
    alarm: list[tuple[datetime, str, str]] = field(default_factory=list)
    decisions: list[Entry] = field(default_factory=list)
    states: list[tuple[datetime, str]] = field(default_factory=list)
    ssh: list[tuple[datetime, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class Figures:
    detect_s: float | None
    reboot_call_s: float | None
    recover_s: float | None


def figures(seen: Observations) -> Figures:
    """Seconds from the freeze to the alarm, to the function's action, and to SSH answering after it."""

    def since(when: datetime) -> float:
        return round((when - seen.freeze_at).total_seconds(), 1)

    alarmed = next((when for when, _, new in sorted(seen.alarm) if new == "ALARM"), None)
    acted = min((entry.at for entry in seen.decisions), default=None)
    recovered = None
    if acted is not None:
        # The history tag has whole seconds; an answer in the same second still follows the call.
        floor = acted.replace(microsecond=0)
        recovered = next((when for when, answered in sorted(seen.ssh) if answered and when >= floor), None)
    return Figures(
        detect_s=since(alarmed) if alarmed else None,
        reboot_call_s=since(acted) if acted else None,
        recover_s=since(recovered) if recovered else None,
    )


def timeline_events(seen: Observations) -> list[tuple[float, str]]:
    """(seconds since the freeze, what happened), in time order."""

    def since(when: datetime) -> float:
        return (when - seen.freeze_at).total_seconds()

    events: list[tuple[float, str]] = [(0.0, "sshd stopped (SIGSTOP) through SSM Run Command")]
    for when, value in sorted(seen.canary.items()):
        events.append((since(when), f"canary sample: SSHResponsive={value:g}"))
    for when, old, new in sorted(seen.alarm):
        events.append((since(when), f"alarm {old} -> {new}"))
    for entry in sorted(seen.decisions, key=lambda entry: entry.at):
        events.append((since(entry.at), f"auto-reboot function: {entry.action.value}"))
    for when, state in seen.states:
        events.append((since(when), f"instance {state}"))
    for when, answered in seen.ssh:
        events.append((since(when), "SSH answers" if answered else "SSH silent (no banner)"))
    return sorted(events, key=lambda event: event[0])


def judge(result: Figures, budget_s: float) -> tuple[bool, list[str]]:
    """Whether trainguard acted within the budget, and one line per figure."""
    lines = []
    for label, value in (
        ("time to detect (alarm)", result.detect_s),
        ("time to the reboot call", result.reboot_call_s),
        ("time until SSH answers again", result.recover_s),
    ):
        lines.append(f"{label:<30} {'never' if value is None else f'{value:.0f}s'}")
    acted_in_time = result.reboot_call_s is not None and result.reboot_call_s <= budget_s
    verdict = "within" if acted_in_time else "NOT within"
    lines.append(f"the reboot call came {verdict} detection_budget_seconds.userspace_freeze = {budget_s:g}s")
    return acted_in_time and result.recover_s is not None, lines


_TRANSITION = re.compile(r"from (\w+) to (\w+)")


def alarm_transition(item: dict[str, Any]) -> tuple[str, str] | None:
    """(old, new) state of a DescribeAlarmHistory StateUpdate item."""
    try:
        data = json.loads(item.get("HistoryData") or "{}")
        return str(data["oldState"]["stateValue"]), str(data["newState"]["stateValue"])
    except (ValueError, KeyError, TypeError):
        match = _TRANSITION.search(item.get("HistorySummary", ""))
        return (match[1], match[2]) if match else None


@dataclass
class AwsDrill:
    """The drill's I/O: boto3 clients (ec2, ssm, cloudwatch), the clock, the sleep and the SSH check."""

    ec2: Any
    ssm: Any
    cloudwatch: Any
    instance_id: str
    managed_tag: tuple[str, str]
    ssh_answers: Callable[[str], bool]
    private_address: bool = False
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    sleep: Callable[[float], None] = time.sleep

    def preflight(self) -> tuple[str, str]:
        """(the SSH alarm's name, the address SSH is checked at); raises DrillRefused when the drill must not run."""
        instance = self._instance()
        if instance is None:
            raise DrillRefused(f"{self.instance_id}: no such instance in this account and region")
        tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
        key, value = self.managed_tag
        if tags.get(key) != value:
            raise DrillRefused(f"{self.instance_id} lacks the tag {key}={value}: the drill runs only on managed hosts")
        if instance["State"]["Name"] != "running":
            raise DrillRefused(f"{self.instance_id} is {instance['State']['Name']}, not running")
        alarms = self.cloudwatch.describe_alarms_for_metric(
            MetricName=contract.SSH_RESPONSIVE_METRIC,
            Namespace=contract.CANARY_NAMESPACE,
            Dimensions=self._dimensions(),
        )["MetricAlarms"]
        if not alarms:
            raise DrillRefused(
                f"{self.instance_id} has no {contract.SSH_RESPONSIVE_METRIC} alarm: is the stack's canary deployed?"
            )
        address = instance.get("PrivateIpAddress") if self.private_address else instance.get("PublicIpAddress")
        if not address:
            kind = "private" if self.private_address else "public (pass --private?)"
            raise DrillRefused(f"{self.instance_id} has no {kind} address to check SSH at")
        return str(alarms[0]["AlarmName"]), str(address)

    def freeze(self, thaw_after_s: int, wait_s: float = 120.0) -> datetime:
        """Run the freeze through SSM and wait for it to succeed; returns when sshd stopped."""
        command_id = self._send(freeze_commands(thaw_after_s), "trainguard drill: freeze sshd")
        give_up = self.now() + timedelta(seconds=wait_s)
        while True:
            status, output = self._invocation(command_id)
            if status == "Success":
                return self.now()
            if status in ("Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated"):
                raise DrillRefused(f"the freeze did not run on {self.instance_id} ({status}): {output.strip()}")
            if self.now() >= give_up:
                raise DrillRefused(f"SSM did not run the freeze on {self.instance_id} within {wait_s:.0f}s")
            self.sleep(2.0)

    def thaw(self) -> None:
        self._send(thaw_commands(), "trainguard drill: thaw sshd")

    def watch(
        self,
        seen: Observations,
        alarm_name: str,
        address: str,
        until: datetime,
        poll_s: float = 10.0,
        on_event: Callable[[float, str], None] = lambda at, text: None,
    ) -> Observations:
        """Poll every source until SSH answers after the function acted, or `until`."""
        shown = 0
        while True:
            self._poll(seen, alarm_name, address)
            events = timeline_events(seen)
            for at, text in events[shown:]:
                on_event(at, text)
            shown = len(events)
            if figures(seen).recover_s is not None or self.now() >= until:
                return seen
            self.sleep(poll_s)

    def _poll(self, seen: Observations, alarm_name: str, address: str) -> None:
        now = self.now()
        points = self.cloudwatch.get_metric_statistics(
            Namespace=contract.CANARY_NAMESPACE,
            MetricName=contract.SSH_RESPONSIVE_METRIC,
            Dimensions=self._dimensions(),
            StartTime=seen.freeze_at - timedelta(seconds=60),
            EndTime=now + timedelta(seconds=10),
            Period=10,
            Statistics=["Minimum"],
        )["Datapoints"]
        for point in points:
            seen.canary[point["Timestamp"].astimezone(timezone.utc)] = float(point["Minimum"])
        history = self.cloudwatch.describe_alarm_history(
            AlarmName=alarm_name, HistoryItemType="StateUpdate", StartDate=seen.freeze_at, EndDate=now
        )["AlarmHistoryItems"]
        known = {when for when, _, _ in seen.alarm}
        for item in history:
            when = item["Timestamp"].astimezone(timezone.utc)
            transition = alarm_transition(item)
            if transition and when not in known:
                seen.alarm.append((when, *transition))
        instance = self._instance()
        if instance is not None:
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            floor = seen.freeze_at.replace(microsecond=0)
            seen.decisions = [
                entry for entry in decode_history(tags.get(contract.HISTORY_TAG_KEY)) if entry.at >= floor
            ]
            state = instance["State"]["Name"]
            if not seen.states or seen.states[-1][1] != state:
                seen.states.append((now, state))
        answered = self.ssh_answers(address)
        if not seen.ssh or seen.ssh[-1][1] != answered:
            seen.ssh.append((self.now(), answered))

    def _instance(self) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            reservations = self.ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "").startswith("InvalidInstanceID"):
                return None
            raise
        return reservations[0]["Instances"][0] if reservations else None

    def _dimensions(self) -> list[dict[str, str]]:
        return [{"Name": contract.INSTANCE_DIMENSION, "Value": self.instance_id}]

    def _send(self, commands: list[str], comment: str) -> str:
        sent = self.ssm.send_command(
            InstanceIds=[self.instance_id],
            DocumentName="AWS-RunShellScript",
            Comment=comment,
            Parameters={"commands": commands, "executionTimeout": ["60"]},
            TimeoutSeconds=60,
        )
        return str(sent["Command"]["CommandId"])

    def _invocation(self, command_id: str) -> tuple[str, str]:
        from botocore.exceptions import ClientError

        try:
            answer = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance_id)
        except ClientError as error:
            # Right after SendCommand the invocation may not exist yet.
            if error.response.get("Error", {}).get("Code") == "InvocationDoesNotExist":
                return "Pending", ""
            raise
        return str(answer["Status"]), str(answer.get("StandardErrorContent", ""))
