"""The auto-reboot handler under moto: snapshots, console kept, one reboot per event, budget, grace, escalation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from healthcheck.lambdas.auto_reboot import handler
from healthcheck.remediation.actions import Clients, Remediator
from healthcheck.remediation.policy import HISTORY_TAG, RemediationSettings

REGION = "eu-west-1"
ALARM = "trainguard-i-x-instance-status"


@dataclass
class World:
    """A moto account with one managed instance (root + data volume), a bucket and a topic read by a queue."""

    ec2: Any
    s3: Any
    sns: Any
    sqs: Any
    ssm: Any
    scheduler: Any
    cloudwatch: Any
    instance_id: str
    bucket: str
    topic_arn: str
    queue_url: str
    now: datetime
    calls: dict[str, int] = field(default_factory=dict)

    def remediator(self, **settings: Any) -> Remediator:
        settings.setdefault("bucket", self.bucket)
        return Remediator(
            RemediationSettings(topic_arn=self.topic_arn, **settings),
            Clients(
                ec2=self.ec2,
                s3=self.s3,
                sns=self.sns,
                ssm=self.ssm,
                scheduler=self.scheduler,
                cloudwatch=self.cloudwatch,
            ),
            clock=lambda: self.now,
        )

    def tags(self) -> dict[str, str]:
        instance = self.ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"][0]["Instances"][0]
        return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}

    def state(self) -> str:
        instance = self.ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"][0]["Instances"][0]
        return str(instance["State"]["Name"])

    def emails(self) -> list[dict[str, str]]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    def count(self, operation: str) -> None:
        """Count calls of an EC2 operation on the real (moto) client, through botocore's event hooks."""

        def seen(**_: Any) -> None:
            self.calls[operation] = self.calls.get(operation, 0) + 1

        self.ec2.meta.events.register(f"before-call.ec2.{operation}", seen)


@pytest.fixture
def world(aws_credentials: str) -> Iterator[World]:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        scheduler = boto3.client("scheduler", region_name=REGION)
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        instance = ec2.run_instances(
            ImageId="ami-0123456789abcdef0",  # moto runs instances from any image id
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "trainguard:managed", "Value": "true"}]}],
        )["Instances"][0]
        volume = ec2.create_volume(Size=200, AvailabilityZone=instance["Placement"]["AvailabilityZone"])
        ec2.attach_volume(VolumeId=volume["VolumeId"], InstanceId=instance["InstanceId"], Device="/dev/sdf")
        s3.create_bucket(Bucket="results", CreateBucketConfiguration={"LocationConstraint": REGION})
        topic_arn = sns.create_topic(Name="alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        yield World(
            ec2,
            s3,
            sns,
            sqs,
            ssm,
            scheduler,
            cloudwatch,
            instance["InstanceId"],
            "results",
            topic_arn,
            queue_url,
            now=instance["LaunchTime"] + timedelta(hours=2),
        )


def lambda_action(instance_id: str, state: str = "ALARM", at: str = "2026-11-29T12:00:00.000+0000") -> dict[str, Any]:
    """The payload CloudWatch sends when an alarm invokes a Lambda function directly."""
    return {
        "source": "aws.cloudwatch",
        "alarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{ALARM}",
        "accountId": "123456789012",
        "time": at,
        "region": REGION,
        "alarmData": {
            "alarmName": ALARM,
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


def sns_wrapped(instance_id: str, state: str = "ALARM", at: str = "2026-11-29T12:00:00.000+0000") -> dict[str, Any]:
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


def stopped_event(instance_id: str) -> dict[str, Any]:
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
    ((_, action, _),) = [entry.split(":") for entry in world.tags()[HISTORY_TAG].split()]
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
    assert f"python -m healthcheck probe {world.instance_id}" in text
    assert f"Post-mortem files: s3://results/postmortem/{world.instance_id}/" in text
    assert "aws ec2 create-volume --snapshot-id snap-" in text
    assert f"--availability-zone {REGION}" in text  # the instance's own zone, so the volume can attach


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
    assert [entry.split(":")[1] for entry in world.tags()[HISTORY_TAG].split()] == ["R", "S", "T"]


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
