"""The auto-reboot handler under moto: snapshots, console kept, one reboot per event, budget, grace, escalation."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthcheck import contract
from healthcheck.lambdas.auto_reboot import handler
from healthcheck.remediation.actions import Remediator
from healthcheck.remediation.events import AlarmEvent, relook_payload
from tests.healthcheck.conftest import ALARM, REGION, World


def lambda_action(
    instance_id: Any, state: str = "ALARM", at: str = "2026-11-29T12:00:00.000+0000", alarm: str = ALARM
) -> dict[str, Any]:
    """The payload CloudWatch sends when an alarm invokes a Lambda function directly."""
    return {
        "source": "aws.cloudwatch",
        "alarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{alarm}",
        "accountId": "123456789012",
        "time": at,
        "region": REGION,
        "alarmData": {
            "alarmName": alarm,
            "state": {"value": state, "reason": "Threshold Crossed: 3 datapoints [1.0, 1.0, 1.0]", "timestamp": at},
            "previousState": {"value": "OK", "timestamp": "2026-11-29T11:00:00.000+0000"},
            "configuration": {
                "metrics": [
                    {
                        "id": "m1",
                        "metricStat": {
                            "metric": {
                                "namespace": "AWS/EC2",
                                "name": "StatusCheckFailed_Instance",
                                "dimensions": {"InstanceId": instance_id},
                            },
                            "period": 60,
                            "stat": "Maximum",
                        },
                        "returnData": True,
                    }
                ]
            },
        },
    }


def sns_wrapped(instance_id: Any, state: str = "ALARM", at: str = "2026-11-29T12:00:00.000+0000") -> dict[str, Any]:
    """The classic alarm message, as SNS delivers it to a subscribed function."""
    message = {
        "AlarmName": ALARM,
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 3 datapoints [1.0, 1.0, 1.0]",
        "StateChangeTime": at,
        "Trigger": {
            "MetricName": "StatusCheckFailed_Instance",
            "Namespace": "AWS/EC2",
            "Dimensions": [{"value": instance_id, "name": "InstanceId"}],
        },
    }
    return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(message)}}]}


def stopped_event(instance_id: Any) -> dict[str, Any]:
    """EventBridge's notice that an instance stopped."""
    return {
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "time": "2026-11-29T12:16:00Z",
        "detail": {"instance-id": instance_id, "state": "stopped"},
    }


def test_reboot_snapshots_every_volume_keeps_the_console_reboots_records_and_emails(world: World) -> None:
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    (handled,) = summary["handled"]
    assert handled["decision"] == "REBOOT"
    assert len(handled["snapshot_ids"]) == 2  # root and /data, in one crash-consistent call
    snapshots = world.ec2.describe_snapshots(SnapshotIds=handled["snapshot_ids"])["Snapshots"]
    assert all({"Key": "trainguard:alarm", "Value": ALARM} in s["Tags"] for s in snapshots)
    keys = [o["Key"] for o in world.s3.list_objects_v2(Bucket="results", Prefix="postmortem/")["Contents"]]
    console_key = next(k for k in keys if k.endswith("/console.txt"))
    assert console_key.startswith(f"postmortem/{world.instance_id}/")
    assert "Linux version" in world.s3.get_object(Bucket="results", Key=console_key)["Body"].read().decode()
    assert world.calls == {"RebootInstances": 1}
    ((_, action, _),) = [entry.split(":") for entry in world.tags()[contract.HISTORY_TAG_KEY].split()]
    assert action == "R"


def test_the_email_says_what_fired_what_was_done_and_what_next(world: World) -> None:
    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    (email,) = world.emails()
    assert email["Subject"] == f"trainguard: rebooted {world.instance_id} after {ALARM}"
    text = email["Message"]
    assert f"What fired: {ALARM} went to ALARM at 2026-11-29T12:00:00.000+0000." in text
    for snapshot_id in summary["handled"][0]["snapshot_ids"]:
        assert snapshot_id in text
    assert "reboot: done, reboot requested at" in text
    assert "Last 30 lines of the console:" in text
    assert "  | " in text
    assert f"trainguard probe {world.instance_id}" in text
    assert f"Post-mortem files: s3://results/postmortem/{world.instance_id}/" in text
    assert "aws ec2 create-volume --snapshot-id snap-" in text
    assert f"--availability-zone {REGION}" in text  # the instance's own zone, so the volume can attach


def test_every_command_the_email_prints_names_the_region(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda runtime sets AWS_REGION; a laptop whose default region is another one still finds the instance."""
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("TRAINGUARD_TOPIC_ARN", world.topic_arn)
    monkeypatch.setenv("TRAINGUARD_BUCKET", world.bucket)
    monkeypatch.setenv("TRAINGUARD_BOOT_GRACE_SECONDS", "0")

    handler(lambda_action(world.instance_id), None)

    (email,) = world.emails()
    lines = email["Message"].splitlines()
    commands = [line.strip() for line in lines if re.search(r"(trainguard (probe|reboot)|aws ec2) ", line)]
    assert len(commands) == 4  # probe, create-volume, attach-volume, reboot
    assert all(f"--region {REGION}" in command for command in commands), commands


def test_duplicate_delivery_reboots_exactly_once(world: World) -> None:
    world.count("RebootInstances")
    remediator = world.remediator()

    first = handler(lambda_action(world.instance_id), None, remediator=remediator)
    world.now += timedelta(minutes=1)
    again = handler(lambda_action(world.instance_id), None, remediator=remediator)
    as_sns = handler(sns_wrapped(world.instance_id), None, remediator=remediator)

    assert first["handled"][0]["decision"] == "REBOOT"
    assert again["handled"][0]["decision"] == "SKIP_DUPLICATE"
    assert as_sns["handled"][0]["decision"] == "SKIP_DUPLICATE"
    assert world.calls == {"RebootInstances": 1}


def test_concurrent_duplicates_are_caught_by_the_atomic_claim(world: World) -> None:
    """Two deliveries that both read the tags before either writes: the claim lets one act."""
    world.count("RebootInstances")
    remediator = world.remediator()
    event = lambda_action(world.instance_id)
    stale = remediator.facts(world.instance_id)
    remediator.facts = lambda _instance_id: stale  # type: ignore[method-assign]  # both see the tags as before

    results = [handler(event, None, remediator=remediator)["handled"][0]["decision"] for _ in range(2)]

    assert results == ["REBOOT", "SKIP_CLAIMED"]
    assert world.calls == {"RebootInstances": 1}


def test_both_event_shapes_lead_to_the_same_decision(world: World) -> None:
    from healthcheck.remediation.events import parse

    assert parse(lambda_action(world.instance_id))[0] == parse(sns_wrapped(world.instance_id))[0]


def test_only_alarm_acts(world: World) -> None:
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id, state="OK"), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "IGNORE"
    assert world.calls == {}


def test_budget_exhausted_gives_up_and_asks_for_a_person(world: World) -> None:
    world.count("RebootInstances")
    remediator = world.remediator(max_reboots=2, boot_grace=timedelta(seconds=60))
    handler(lambda_action(world.instance_id, at="2026-11-29T12:00:00Z"), None, remediator=remediator)
    world.now += timedelta(minutes=10)
    handler(lambda_action(world.instance_id, at="2026-11-29T12:10:00Z"), None, remediator=remediator)  # stop/start
    handler(stopped_event(world.instance_id), None, remediator=remediator)
    world.now += timedelta(minutes=10)
    world.emails()

    last = handler(lambda_action(world.instance_id, at="2026-11-29T12:20:00Z"), None, remediator=remediator)

    assert last["handled"][0]["decision"] == "GIVE_UP"
    assert world.calls == {"RebootInstances": 1}
    assert world.state() == "running"
    (email,) = world.emails()
    assert "NOT rebooting" in email["Subject"]
    assert "A person is needed" in email["Message"]


def test_boot_grace_skips_a_freshly_booted_instance(world: World) -> None:
    world.now -= timedelta(hours=2) - timedelta(minutes=2)  # two minutes after launch
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "SKIP_BOOT_GRACE"
    assert world.calls == {}
    assert world.emails() == []


def test_not_managed_is_skipped(world: World) -> None:
    world.ec2.delete_tags(Resources=[world.instance_id], Tags=[{"Key": "trainguard:managed"}])

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "SKIP_NOT_MANAGED"


def test_still_failing_after_a_reboot_escalates_to_stop_then_start(world: World) -> None:
    remediator = world.remediator()
    handler(lambda_action(world.instance_id, at="2026-11-29T12:00:00Z"), None, remediator=remediator)
    world.now += timedelta(minutes=15)

    escalated = handler(lambda_action(world.instance_id, at="2026-11-29T12:15:00Z"), None, remediator=remediator)
    state_after_stop = world.state()
    started = handler(stopped_event(world.instance_id), None, remediator=remediator)

    assert escalated["handled"][0]["decision"] == "STOP_START"
    assert state_after_stop == "stopped"
    assert started["handled"] == [{"instance_id": world.instance_id, "decision": "START"}]
    assert world.state() == "running"
    assert [entry.split(":")[1] for entry in world.tags()[contract.HISTORY_TAG_KEY].split()] == ["R", "S", "T"]


def test_a_stopped_event_for_an_instance_trainguard_did_not_stop_is_ignored(world: World) -> None:
    world.ec2.stop_instances(InstanceIds=[world.instance_id])
    event = {
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": world.instance_id, "state": "stopped"},
    }

    summary = handler(event, None, remediator=world.remediator())

    assert summary["handled"] == [{"instance_id": world.instance_id, "decision": "IGNORE"}]
    assert world.state() == "stopped"


def test_a_failed_snapshot_still_recovers_and_says_so(world: World) -> None:
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "SnapshotLimitExceeded", "Message": "too many"}}, "CreateSnapshots")

    world.ec2.meta.events.register("before-call.ec2.CreateSnapshots", refuse)
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert summary["handled"][0]["snapshot_ids"] == []
    assert world.calls == {"RebootInstances": 1}
    (email,) = world.emails()
    assert "snapshot: FAILED, ClientError" in email["Message"]
    assert "recovering anyway, without a snapshot" in email["Message"]


@pytest.mark.parametrize(
    "junk",
    [
        None,
        "ALARM",
        [],
        {},
        {"alarmData": {"alarmName": "x"}},
        {"alarmData": {"alarmName": "x", "state": {"value": "ALARM"}, "configuration": {"metrics": []}}},
        {"Records": "nope"},
        {"Records": [{"Sns": {"Message": "not json"}}]},
        {"Records": [{"Sns": {"Message": json.dumps({"AlarmName": "x", "NewStateValue": "ALARM"})}}]},
        {"detail-type": "EC2 Instance State-change Notification"},
    ],
)
def test_junk_events_are_logged_and_returned_from_never_raised(world: World, junk: Any, caplog) -> None:
    world.count("RebootInstances")

    summary = handler(junk, None, remediator=world.remediator())

    assert summary["handled"] == []
    assert summary["ignored"]
    assert world.calls == {}
    assert "trainguard.ignored" in caplog.text


def test_an_alarm_for_an_instance_that_no_longer_exists_is_ignored(world: World) -> None:
    summary = handler(lambda_action("i-0123456789abcdef0"), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "IGNORE"


def test_one_structured_log_line_per_decision(world: World, caplog) -> None:
    caplog.set_level("INFO", logger="trainguard.auto_reboot")

    handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    lines = [json.loads(r.message) for r in caplog.records if r.message.startswith('{"alarm"')]
    assert len(lines) == 1
    assert lines[0]["decision"] == "REBOOT" and lines[0]["instance_id"] == world.instance_id


def test_handler_reads_its_settings_from_the_environment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINGUARD_TOPIC_ARN", world.topic_arn)
    monkeypatch.setenv("TRAINGUARD_BUCKET", world.bucket)
    monkeypatch.setenv("TRAINGUARD_BOOT_GRACE_SECONDS", "0")

    summary = handler(lambda_action(world.instance_id), None)

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert len(world.emails()) == 1


# --- The budget holds ------------------------------------------------------------------------------------------


def test_the_budget_holds_with_alarms_eleven_minutes_apart_for_two_hours(world: World) -> None:
    """Gave-up and started entries used to push remediations out of the history: 6 in 2 hours with a budget of 3."""
    world.count("RebootInstances")
    world.count("StopInstances")
    remediator = world.remediator(max_reboots=3)
    start = world.now

    for number in range(12):  # 0, 11, ..., 121 minutes
        world.now = start + timedelta(minutes=11 * number)
        handler(lambda_action(world.instance_id, at=f"2026-11-29T12:{number:02d}:00Z"), None, remediator=remediator)
        if world.state() == "stopped":
            world.now += timedelta(minutes=1)
            handler(stopped_event(world.instance_id), None, remediator=remediator)

    assert sum(world.calls.values()) == 3
    gave_up = [e for e in world.emails() if "NOT rebooting" in e["Subject"]]
    assert len(gave_up) == 1  # once, not on every alarm after


# --- One remediation per instance at a time -------------------------------------------------------------------


def _together(world: World, remediator: Remediator, events: list[dict[str, Any]]) -> list[str]:
    """Deliver the events in threads that all read the instance before any of them acts."""
    read = remediator.facts
    barrier = threading.Barrier(len(events), timeout=60)

    def read_then_wait(instance_id: str) -> Any:
        facts = read(instance_id)
        barrier.wait()
        return facts

    remediator.facts = read_then_wait  # type: ignore[method-assign]
    decisions: list[str] = []

    def deliver(event: dict[str, Any]) -> None:
        decisions.append(handler(event, None, remediator=remediator)["handled"][0]["decision"])

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sorted(decisions)


@pytest.mark.parametrize("grace", [timedelta(seconds=600), timedelta(0)], ids=["grace", "no-grace"])
def test_three_alarms_for_one_instance_arriving_together_reboot_once_and_snapshot_once(
    world: World, grace: timedelta
) -> None:
    world.count("RebootInstances")
    world.count("CreateSnapshots")
    alarms = [f"trainguard-{world.instance_id}-{key}" for key in ("instance-status", "ssh-unresponsive", "cpu")]
    remediator = world.remediator(boot_grace=grace)

    decisions = _together(world, remediator, [lambda_action(world.instance_id, alarm=a) for a in alarms])

    assert decisions == ["REBOOT", "SKIP_CLAIMED", "SKIP_CLAIMED"]
    assert world.calls == {"RebootInstances": 1, "CreateSnapshots": 1}
    assert len(world.emails()) == 1


def test_the_same_event_twice_together_without_a_bucket_reboots_once(world: World) -> None:
    world.count("RebootInstances")

    decisions = _together(world, world.remediator(bucket=None), [lambda_action(world.instance_id)] * 2)

    assert decisions == ["REBOOT", "SKIP_CLAIMED"]
    assert world.calls == {"RebootInstances": 1}


def test_a_runtime_botocore_without_if_none_match_still_remediates_once(world: World) -> None:
    """Lambda's bundled botocore may predate S3's IfNoneMatch: it raises ParamValidationError, not ClientError."""

    def old_botocore(params: dict[str, Any], **_: Any) -> None:
        if "IfNoneMatch" in params:
            raise ParamValidationError(report='Unknown parameter in input: "IfNoneMatch"')

    world.s3.meta.events.register("before-parameter-build.s3.PutObject", old_botocore)
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert world.calls == {"RebootInstances": 1}


def test_when_the_claim_cannot_be_made_it_goes_ahead_and_says_so(world: World) -> None:
    def unreachable(**_: Any) -> None:
        raise ParamValidationError(report="simulated: Parameter Store refused the request")

    world.ssm.meta.events.register("before-call.ssm.PutParameter", unreachable)
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert world.calls == {"RebootInstances": 1}
    (email,) = world.emails()
    assert "claim: FAILED, ParamValidationError" in email["Message"]
    assert "going ahead on the history tag alone" in email["Message"]


@pytest.mark.parametrize(
    ("claimed_ago", "decision"),
    [(timedelta(minutes=2), "SKIP_CLAIMED"), (timedelta(minutes=11), "REBOOT"), (None, "REBOOT")],
    ids=["held", "abandoned", "unreadable"],
)
def test_a_claim_whose_holder_never_recorded_is_stepped_over_after_a_grace_period(
    world: World, claimed_ago: timedelta | None, decision: str
) -> None:
    at = "junk" if claimed_ago is None else int((world.now - claimed_ago).timestamp())
    world.ssm.put_parameter(
        Name=f"/trainguard/claims/{world.instance_id}/0",
        Value=json.dumps({"alarm": "lost", "at": at}),
        Type="String",
    )

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == decision


# --- Unmanaged instances are never touched --------------------------------------------------------------------


def test_a_stopped_unmanaged_instance_is_never_started_even_with_a_forged_history(world: World) -> None:
    world.ec2.delete_tags(Resources=[world.instance_id], Tags=[{"Key": "trainguard:managed"}])
    forged = f"{int(world.now.timestamp())}:S:abcdef01"
    world.ec2.create_tags(
        Resources=[world.instance_id],
        Tags=[{"Key": contract.HISTORY_TAG_KEY, "Value": forged}, {"Key": "Name", "Value": "trainguard:managed=true"}],
    )
    world.ec2.stop_instances(InstanceIds=[world.instance_id])
    world.count("StartInstances")

    summary = handler(stopped_event(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"] == [{"instance_id": world.instance_id, "decision": "IGNORE"}]
    assert world.state() == "stopped"
    assert world.calls == {}


# --- Never raise ---------------------------------------------------------------------------------------------

NOT_IDS = [
    12345,
    None,
    True,
    1.5,
    {"id": "i-0123456789abcdef0"},
    ["i-0123456789abcdef0"],
    "i-xyz",
    "",
    "i-1\n",
    "i-0123456789abcdef0\n",  # a whole id and a newline: a pattern ending in $ would take it
]


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(stopped_event("i-0123456789abcdef0"), id="stopped-instance-that-does-not-exist"),
        *(pytest.param(lambda_action(bad), id=f"alarm-instance-id-{bad!r}") for bad in NOT_IDS),
        *(pytest.param(sns_wrapped(bad), id=f"sns-instance-id-{bad!r}") for bad in NOT_IDS),
        *(pytest.param(stopped_event(bad), id=f"stopped-instance-id-{bad!r}") for bad in NOT_IDS),
        pytest.param({"Records": [{"Sns": {"Message": "[" * 100000}}]}, id="deeply-nested-sns-message"),
        pytest.param({"Records": [{"Sns": {"Message": json.dumps({"AlarmName": {"x": 1}})}}]}, id="name-not-text"),
        pytest.param({"Records": [None, 1, "x", {"Sns": None}]}, id="records-not-objects"),
        pytest.param({"alarmData": []}, id="alarm-data-not-object"),
        pytest.param({"alarmData": {"configuration": {"metrics": [None, 1]}}}, id="metrics-not-objects"),
        pytest.param({"source": "trainguard.relook", "alarm": None}, id="relook-without-alarm"),
        pytest.param({"detail-type": "EC2 Instance State-change Notification", "detail": []}, id="detail-not-object"),
        pytest.param(12345, id="number"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(["ALARM"], id="list"),
        pytest.param({1: 2}, id="non-string-keys"),
    ],
)
def test_hostile_events_never_raise_and_touch_nothing(world: World, hostile: Any) -> None:
    for operation in ("RebootInstances", "StopInstances", "StartInstances", "CreateSnapshots"):
        world.count(operation)

    summary = handler(hostile, None, remediator=world.remediator())

    assert all(item["decision"] == "IGNORE" for item in summary["handled"])
    assert world.calls == {}


def test_an_aws_failure_is_logged_and_emailed_not_raised(world: World, caplog: pytest.LogCaptureFixture) -> None:
    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeInstances")

    world.ec2.meta.events.register("before-call.ec2.DescribeInstances", throttled)

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "ERROR"
    assert "RequestLimitExceeded" in summary["handled"][0]["reason"]
    assert "trainguard.failed" in caplog.text
    (email,) = world.emails()
    assert email["Subject"] == f"trainguard: could not handle {ALARM} (ALARM) for {world.instance_id}"


def test_an_instance_trainguard_stopped_that_will_not_start_is_emailed(world: World) -> None:
    remediator = world.remediator()
    handler(lambda_action(world.instance_id, at="2026-11-29T12:00:00Z"), None, remediator=remediator)
    world.now += timedelta(minutes=15)
    handler(lambda_action(world.instance_id, at="2026-11-29T12:15:00Z"), None, remediator=remediator)  # stop/start
    world.emails()

    def no_capacity(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "StartInstances")

    world.ec2.meta.events.register("before-call.ec2.StartInstances", no_capacity)

    summary = handler(stopped_event(world.instance_id), None, remediator=remediator)

    assert summary["handled"][0]["decision"] == "ERROR"
    (email,) = world.emails()
    assert email["Subject"] == f"trainguard: could not handle its stopped event for {world.instance_id}"
    assert "InsufficientInstanceCapacity" in email["Message"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TRAINGUARD_MAX_REBOOTS", "lots", "from 0 to 10"),
        ("TRAINGUARD_MAX_REBOOTS", "11", "from 0 to 10 (the history tag counts 10"),
        # timedelta(hours=10**20) raised OverflowError
        ("TRAINGUARD_REBOOT_WINDOW_HOURS", "99999999999999999999", "from 1 to 168"),
        ("TRAINGUARD_BOOT_GRACE_SECONDS", "1" + "0" * 30, "from 0 to 86400"),
        # more digits than int() parses
        ("TRAINGUARD_BOOT_GRACE_SECONDS", "9" * 5000, "from 0 to 86400"),
        # isdigit() says yes, int() says no
        ("TRAINGUARD_BOOT_GRACE_SECONDS", "\u00b2", "from 0 to 86400"),
        ("TRAINGUARD_EVIDENCE_RETAIN_DAYS", "0", "from 1 to 365"),
    ],
)
def test_a_misconfigured_function_logs_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)

    summary = handler(lambda_action("i-0123456789abcdef0"), None)

    (failed,) = summary["failed"]
    assert failed.startswith(f"{variable}=") and expected in failed
    assert len(failed) < 200  # a 5000-digit value is not repeated whole
    assert "trainguard.misconfigured" in caplog.text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["ALARM", "OK", "stopped", "running", "i-0123456789abcdef0", "", "[" * 5000]),
)


@st.composite
def hostile_events(draw: st.DrawFn, instance_id: str) -> Any:
    """Mostly real event shapes (alarm, SNS, stopped, look again) with a few values replaced or removed."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    target = draw(st.sampled_from([instance_id, instance_id, "i-0123456789abcdef0"]))
    alarm = draw(st.sampled_from([ALARM, HEARTBEAT, f"trainguard-{target}-ssh-unresponsive"]))
    at = draw(st.sampled_from(["2026-11-29T12:00:00Z", "2026-11-29T12:05:00Z", "", "not a time"]))
    shapes = [
        lambda_action(target, at=at, alarm=alarm),
        sns_wrapped(target, at=at),
        stopped_event(target),
        relook_payload(AlarmEvent(alarm, "ALARM", target, at, "fuzz"), "2026-11-29T12:11:00Z", "s"),
    ]
    event = json.loads(json.dumps(draw(st.sampled_from(shapes))))
    for _ in range(draw(st.integers(0, 2))):
        paths = _paths(event)[1:]
        if not paths:  # an earlier mutation emptied the event
            break
        path = draw(st.sampled_from(paths))
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.integers(0, 3)) == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(LEAVES | JSON)
    return event


def test_fuzzed_events_never_raise_and_never_remediate_twice_in_a_grace_period(world: World) -> None:
    """Hypothesis against the handler and moto: whatever arrives, it returns, and the claim and grace still hold."""
    for operation in ("RebootInstances", "StopInstances", "StartInstances"):
        world.count(operation)
    remediator = relooking(world)  # looks again find the alarm in ALARM and decide
    seen: set[str] = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(event=hostile_events(world.instance_id))
    def never_raises(event: Any) -> None:
        summary = handler(event, None, remediator=remediator)
        assert isinstance(summary["handled"], list) and isinstance(summary["ignored"], list)
        assert all(item["decision"] != "ERROR" for item in summary["handled"]), summary
        seen.update(item["decision"] for item in summary["handled"])

    never_raises()
    assert sum(world.calls.values()) <= 1
    assert {"REBOOT", "SKIP_BOOT_GRACE", "IGNORE"} <= seen  # the fuzz reached the decisions, not only the parser


# --- An alarm that stays in ALARM is acted on again -------------------------------------------------------------

RELOOK_GROUP = "trainguard-relooks"
RELOOK_ROLE = "arn:aws:iam::123456789012:role/trainguard-relook"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:trainguard-auto-reboot"


def relooking(world: World, state: str = "ALARM", **settings: Any) -> Remediator:
    """A remediator that schedules its looks again, and the alarm in CloudWatch in the given state."""
    world.scheduler.create_schedule_group(Name=RELOOK_GROUP)
    world.cloudwatch.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="AWS/EC2",
        MetricName="StatusCheckFailed_Instance",
        Dimensions=[{"Name": "InstanceId", "Value": world.instance_id}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=3,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    world.cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue=state, StateReason="test")
    return world.remediator(
        relook_group=RELOOK_GROUP, relook_role_arn=RELOOK_ROLE, function_arn=FUNCTION_ARN, **settings
    )


def pending_looks(world: World) -> list[dict[str, Any]]:
    listed = world.scheduler.list_schedules(GroupName=RELOOK_GROUP)["Schedules"]
    return [world.scheduler.get_schedule(Name=item["Name"], GroupName=RELOOK_GROUP) for item in listed]


def fire(world: World, remediator: Remediator) -> str:
    """Scheduler's part: at the schedule's time, invoke the function with its input."""
    (look,) = pending_looks(world)
    at = datetime.strptime(look["ScheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=timezone.utc)
    world.now = max(world.now, at)
    summary = handler(json.loads(look["Target"]["Input"]), None, remediator=remediator)
    return str(summary["handled"][0]["decision"])


def test_a_freeze_inside_boot_grace_is_looked_at_again_escalated_and_given_up_with_one_email(world: World) -> None:
    world.now -= timedelta(hours=2) - timedelta(minutes=2)  # two minutes after launch
    remediator = relooking(world, max_reboots=2)
    world.count("RebootInstances")
    world.count("StopInstances")

    first = handler(lambda_action(world.instance_id), None, remediator=remediator)
    decisions = [first["handled"][0]["decision"]]
    while pending_looks(world) and len(decisions) < 10:
        decisions.append(fire(world, remediator))
        if world.state() == "stopped":
            world.now += timedelta(minutes=1)
            handler(stopped_event(world.instance_id), None, remediator=remediator)

    assert decisions == ["SKIP_BOOT_GRACE", "REBOOT", "STOP_START", "GIVE_UP"]
    assert world.calls == {"RebootInstances": 1, "StopInstances": 1}
    assert pending_looks(world) == []  # given up: no more looks, so no more emails
    later = handler(lambda_action(world.instance_id, at="2026-11-29T13:00:00Z"), None, remediator=remediator)
    assert later["handled"][0]["decision"] == "SKIP_GAVE_UP"
    subjects = [email["Subject"] for email in world.emails()]
    assert sum("NOT rebooting" in subject for subject in subjects) == 1


def test_the_look_again_is_a_one_time_schedule_with_its_own_role(world: World) -> None:
    remediator = relooking(world)

    handler(lambda_action(world.instance_id), None, remediator=remediator)

    (look,) = pending_looks(world)
    expected = world.now + timedelta(minutes=11)
    assert look["ScheduleExpression"] == f"at({expected.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S})"
    assert look["ScheduleExpressionTimezone"] == "UTC"
    assert look["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert look["Target"]["Arn"] == FUNCTION_ARN
    assert look["Target"]["RoleArn"] == RELOOK_ROLE
    payload = json.loads(look["Target"]["Input"])
    assert payload["alarm"]["alarm_name"] == ALARM and payload["alarm"]["instance_id"] == world.instance_id
    (email,) = world.emails()
    assert "look again: done, at " in email["Message"]


def test_a_look_after_the_alarm_cleared_does_nothing_and_schedules_nothing(world: World) -> None:
    remediator = relooking(world)
    handler(lambda_action(world.instance_id), None, remediator=remediator)
    world.emails()
    world.cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="recovered")
    world.count("RebootInstances")

    assert fire(world, remediator) == "SKIP_RECOVERED"
    assert world.calls == {}
    assert world.emails() == []
    assert pending_looks(world) == []


def test_a_look_delivered_twice_acts_once(world: World) -> None:
    world.now -= timedelta(hours=2) - timedelta(minutes=2)  # inside the boot grace: the first look will reboot
    remediator = relooking(world)
    handler(lambda_action(world.instance_id), None, remediator=remediator)
    (look,) = pending_looks(world)
    world.now += timedelta(minutes=9)
    world.count("RebootInstances")

    decisions = [
        handler(json.loads(look["Target"]["Input"]), None, remediator=remediator)["handled"][0]["decision"]
        for _ in range(2)
    ]

    assert decisions == ["REBOOT", "SKIP_DUPLICATE"]
    assert world.calls == {"RebootInstances": 1}


# --- Agent silence alone does not reboot a host that answers SSH -----------------------------------------------

HEARTBEAT = contract.instance_alarm_name("test", "i-0123456789abcdef0", contract.HEARTBEAT_ALARM_KEY)


def _canary_saw(world: World, value: float, ago: timedelta) -> None:
    world.cloudwatch.put_metric_data(
        Namespace="Trainguard",
        MetricData=[
            {
                "MetricName": "SSHResponsive",
                "Dimensions": [{"Name": "InstanceId", "Value": world.instance_id}],
                "Timestamp": world.now - ago,
                "Value": value,
                "StorageResolution": 1,
            }
        ],
    )


def test_agent_silence_while_ssh_answers_emails_and_does_not_reboot(world: World) -> None:
    _canary_saw(world, 1.0, timedelta(seconds=30))
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id, alarm=HEARTBEAT), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "SKIP_SSH_ANSWERS"
    assert world.calls == {}
    (email,) = world.emails()
    assert email["Subject"].startswith(f"trainguard: NOT rebooting (agent silent, SSH answers) {world.instance_id}")
    assert "the SSH canary saw" in email["Message"]


@pytest.mark.parametrize(
    ("samples", "why"),
    [([], "no canary data"), ([(0.0, 20)], "SSH not answering"), ([(1.0, 300)], "answered, but too long ago")],
)
def test_agent_silence_reboots_when_ssh_does_not_answer(
    world: World, samples: list[tuple[float, int]], why: str
) -> None:
    for value, seconds_ago in samples:
        _canary_saw(world, value, timedelta(seconds=seconds_ago))
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id, alarm=HEARTBEAT), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT", why
    assert world.calls == {"RebootInstances": 1}


def test_other_alarms_do_not_wait_for_the_canary(world: World) -> None:
    _canary_saw(world, 1.0, timedelta(seconds=30))

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT"
