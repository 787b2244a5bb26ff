"""A moto account with one managed instance, shared by the remediation's tests and the auto-reboot function's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck.remediation.actions import Clients, Invocation, Remediator
from healthcheck.remediation.policy import RemediationSettings

REGION = "eu-west-1"
ALARM = "trainguard-i-x-instance-status"
CLAIMS = "/trainguard/claims"
COUNTING = threading.Lock()


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

    def remediator(self, invocation: Invocation | None = None, **settings: Any) -> Remediator:
        """A remediator on this account with the world's clock; `invocation`: the Lambda invocation it runs in."""
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
            invocation=invocation or Invocation(),
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

    def claims(self) -> list[str]:
        """Every claim parameter left for the instance."""
        found = self.ssm.get_parameters_by_path(Path=f"{CLAIMS}/{self.instance_id}", Recursive=True)["Parameters"]
        return sorted(parameter["Name"] for parameter in found)

    def count(self, operation: str) -> None:
        """Count calls of an EC2 operation on the real (moto) client, through botocore's event hooks."""

        def seen(**_: Any) -> None:
            with COUNTING:  # deliveries may run in threads
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
