"""What status makes of the facts (pure): a silent port is told apart by the canary, and never advises rebooting
a healthy host; a stopped instance's silence is no news; a spent budget, a stale bundle and no instance at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from healthcheck import contract
from healthcheck.overview.facts import Alarm, Association, InstanceFacts, StackFacts, Subscription
from healthcheck.overview.judge import Report, age, judge
from healthcheck.probe.stages import BannerCheck
from healthcheck.probe.verdict import Verdict
from healthcheck.remediation.policy import Action, Entry, encode_history
from healthcheck.status import Status

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
IID = "i-0123456789abcdef0"
SILENT = BannerCheck(None, Verdict.UNREACHABLE, False, 5.0, "127.0.0.21 port 22: no answer within 5.0s")
ANSWERS = BannerCheck("SSH-2.0-OpenSSH_9.6", None, False, 0.02, "SSH-2.0-OpenSSH_9.6")


def alarm(key: str, state: str = "OK", since: datetime = NOW - timedelta(minutes=3)) -> Alarm:
    name = contract.instance_alarm_name("dev", IID, key)
    return Alarm(name, key, state, since, "Threshold Crossed", f"Trainguard/{key}")


def instance(**changes: object) -> InstanceFacts:
    healthy = InstanceFacts(
        instance_id=IID,
        name="trainguard-dev-0",
        state="running",
        system_status="ok",
        instance_status="ok",
        public_ip="203.0.113.7",
        private_ip="10.0.0.7",
        tags={},
        alarms=(alarm(contract.SSH_ALARM_KEY), alarm(contract.HEARTBEAT_ALARM_KEY)),
        banner=ANSWERS,
        canary_latest=(NOW - timedelta(seconds=15), 1.0),
        agent_latest=NOW - timedelta(seconds=40),
        kills_recent=0,
    )
    return replace(healthy, **changes)  # type: ignore[arg-type]


def report(*instances: InstanceFacts, **changes: object) -> Report:
    facts = StackFacts(
        stack="dev",
        region="eu-west-1",
        at=NOW,
        topic_arn="arn:aws:sns:eu-west-1:123456789012:alerts",
        subscriptions=(Subscription("email", "oncall@example.com", True),),
        bundle_version="0123456789abcdef",
        dlm_state="ENABLED",
        function=None,
        stack_alarms=(),
        instances=instances,
    )
    return judge(replace(facts, **changes))  # type: ignore[arg-type]


def ssh(found: Report) -> tuple[Status, str, tuple[str, ...]]:
    check = found.instances[0].check("ssh")
    assert check is not None
    return check.level, check.summary, check.details


def test_a_watched_instance_is_ok() -> None:
    assert report(instance()).level is Status.OK


def test_a_silent_port_the_canary_hears_answer_is_an_address_problem_not_a_frozen_host() -> None:
    level, summary, details = ssh(report(instance(banner=SILENT)))

    assert (level, summary) == (Status.WARNING, Verdict.ADDRESS_NOT_ALLOWED.value)
    assert "heard sshd answer 15s ago" in details[0]
    assert "sshAllowedCidrs" in details[1]
    assert "trainguard reboot" not in " ".join(details)


def test_a_silent_port_the_canary_cannot_hear_either_is_hung_with_the_auto_reboot_on_it() -> None:
    frozen = instance(
        banner=SILENT,
        canary_latest=(NOW - timedelta(seconds=15), 0.0),
        alarms=(alarm(contract.SSH_ALARM_KEY, "ALARM", NOW - timedelta(seconds=50)),),
    )

    level, summary, details = ssh(report(frozen))

    assert (level, summary) == (Status.CRITICAL, "HUNG")
    assert "in ALARM since 09:59:10 UTC, so the auto-reboot function is acting on it" in details[0]


def test_a_silent_port_with_no_canary_sample_stays_hung_as_the_probe_says() -> None:
    level, summary, _ = ssh(report(instance(banner=SILENT, canary_latest=None)))

    assert (level, summary) == (Status.CRITICAL, "HUNG")


def test_a_stopped_instance_is_a_warning_whose_silent_alarms_are_no_news() -> None:
    stopped = instance(
        state="stopped",
        banner=None,
        canary_latest=None,
        agent_latest=None,
        alarms=(alarm(contract.SSH_ALARM_KEY, "INSUFFICIENT_DATA"),),
    )

    found = report(stopped).instances[0]

    assert [(check.topic, check.level) for check in found.checks if check.level is not Status.OK] == [
        ("ec2", Status.WARNING)
    ]
    assert found.check("ssh") is None and found.check("canary") is None
    ec2 = found.check("ec2")
    assert ec2 is not None and f"aws ec2 start-instances --instance-ids {IID} --region eu-west-1" in ec2.details[0]


def test_a_spent_reboot_budget_says_a_person_is_needed() -> None:
    history = tuple(Entry(NOW - timedelta(hours=hours), Action.REBOOT, "f") for hours in (5, 3, 1))
    spent = instance(tags={contract.HISTORY_TAG_KEY: encode_history(history)})

    reboots = report(spent).instances[0].check("reboots")

    assert reboots is not None and (reboots.level, reboots.summary) == (Status.WARNING, "3/3 spent")
    assert "a person is needed" in reboots.details[0]
    assert reboots.details[1] == "the last remediation: reboot 60 min ago"


@pytest.mark.parametrize(
    ("association", "level", "summary"),
    [
        (Association("Success", NOW, "0123456789abcdef"), Status.OK, "0123456789abcdef Success"),
        (Association("Success", NOW, "fedcba9876543210"), Status.WARNING, "fedcba9876543210 (stack: 0123456789abcdef)"),
        (Association("Failed", NOW, "0123456789abcdef"), Status.WARNING, "0123456789abcdef Failed"),
    ],
)
def test_the_bundle_applied_is_held_against_the_stacks(association: Association, level: Status, summary: str) -> None:
    bundle = report(instance(association=association)).instances[0].check("bundle")

    assert bundle is not None and (bundle.level, bundle.summary) == (level, summary)


def test_no_instance_found_is_unknown_and_says_which_tag_was_looked_for() -> None:
    found = report()

    assert found.level is Status.UNKNOWN
    assert "no instance tagged trainguard:stack=dev in eu-west-1" in found.stack_checks[0].details[0]


def test_a_firing_stack_alarm_is_a_warning() -> None:
    canary_errors = Alarm(
        "trainguard-dev-ssh-canary-errors", "ssh-canary-errors", "ALARM", NOW, "1 error", "AWS/Lambda/Errors"
    )

    assert report(instance(), stack_alarms=(canary_errors,)).level is Status.WARNING


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(None, "never"), (5, "5 s ago"), (600, "10 min ago"), (3 * 3600, "3 h ago"), (3 * 86400, "3 days ago")],
)
def test_ages_are_said_in_the_unit_read_fastest(seconds: int | None, said: str) -> None:
    assert age(None if seconds is None else NOW - timedelta(seconds=seconds), NOW) == said
