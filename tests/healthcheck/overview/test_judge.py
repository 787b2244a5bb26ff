"""What status makes of the facts (pure): a silent port is told apart by the canary, and never advises rebooting
a healthy host; a stopped instance's silence is no news; a spent budget, a stale bundle and no instance at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from healthcheck import contract
from healthcheck.overview.facts import ALARMS, METRICS, Alarm, Association, InstanceFacts, StackFacts, Subscription
from healthcheck.overview.judge import Check, Report, age, judge
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


@pytest.mark.parametrize(
    ("canary", "unavailable", "said"),
    [
        (None, {}, "it has no sample of it in 30 minutes"),
        ((NOW - timedelta(minutes=12), 1.0), {}, "its newest sample is 12 min ago"),
        (None, {METRICS: "ClientError: throttled"}, "its samples could not be read (ClientError: throttled)"),
    ],
)
def test_a_silent_port_nothing_confirms_frozen_is_a_warning_that_advises_no_reboot(
    canary: tuple[datetime, float] | None, unavailable: dict[str, str], said: str
) -> None:
    level, summary, details = ssh(report(instance(banner=SILENT, canary_latest=canary), unavailable=unavailable))

    assert (level, summary) == (Status.WARNING, "silent")
    assert said in details[0] and "cannot tell a frozen sshd from a security group" in details[0]
    assert "reboot" not in " ".join(details)


def test_a_private_address_silent_from_here_while_the_canary_hears_sshd_blames_the_laptops_network() -> None:
    private = instance(banner=SILENT, public_ip=None)

    level, summary, details = ssh(report(private))

    assert (level, summary) == (Status.WARNING, "silent (private)")
    assert "this laptop does not reach the VPC" in details[0] and "sshAllowedCidrs" not in details[0]


def test_facts_that_could_not_be_read_are_said_and_are_no_warnings() -> None:
    found = report(
        instance(alarms=()), topic_arn=None, subscriptions=None, unavailable={ALARMS: "ClientError: AccessDenied"}
    )

    assert found.level is Status.OK
    said = {check.topic: (check.summary, check.details) for check in found.stack_checks}
    assert said["email"][0] == said["alarms"][0] == "could not check"
    assert said["alarms"][1] == ("could not check alarms: ClientError: AccessDenied",)
    assert found.instances[0].check("alarms") == Check(
        "alarms", Status.OK, "could not check", ("could not check alarms: ClientError: AccessDenied",)
    )


def test_ids_the_outputs_name_that_ec2_no_longer_knows_are_a_warning() -> None:
    found = report(instance(), missing=("i-0fedcba9876543210",))

    assert found.level is Status.WARNING
    assert "i-0fedcba9876543210, which EC2 no longer knows" in found.stack_checks[0].details[0]


@pytest.mark.parametrize("state", ["terminated", "shutting-down"])
def test_an_instance_going_or_gone_is_a_warning(state: str) -> None:
    ec2 = report(instance(state=state, banner=None)).instances[0].check("ec2")

    assert ec2 is not None and (ec2.level, ec2.summary) == (Status.WARNING, state)


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
    alarms = found.check("alarms")
    assert alarms is not None and alarms.summary == "1 no data (stopped), 0 OK"
    ec2 = found.check("ec2")
    assert ec2 is not None and f"aws ec2 start-instances --instance-ids {IID} --region eu-west-1" in ec2.details[0]


def test_a_spent_reboot_budget_says_a_person_is_needed() -> None:
    history = tuple(Entry(NOW - timedelta(hours=hours), Action.REBOOT, "f") for hours in (5, 3, 1))
    spent = instance(tags={contract.HISTORY_TAG_KEY: encode_history(history)})

    reboots = report(spent).instances[0].check("reboots")

    assert reboots is not None and (reboots.level, reboots.summary) == (Status.WARNING, "3/3 spent")
    assert "a person is needed" in reboots.details[0]
    assert reboots.details[1] == "the last remediation: reboot 60 min ago"


def test_the_last_remediation_is_a_reboot_or_a_stop_and_a_give_up_is_said_apart() -> None:
    history = (
        Entry(NOW - timedelta(hours=2), Action.REBOOT, "f"),
        Entry(NOW - timedelta(hours=1), Action.GAVE_UP, "f"),
    )

    reboots = report(instance(tags={contract.HISTORY_TAG_KEY: encode_history(history)})).instances[0].check("reboots")

    assert reboots is not None and reboots.details == (
        "the last remediation: reboot 2 h ago",
        "the auto-reboot function last gave up 60 min ago (its budget was spent)",
    )


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


def test_the_canary_function_failing_is_a_warning_as_an_alarm_without_data_is() -> None:
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
