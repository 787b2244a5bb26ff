"""A deployed stack on moto's server, as `pulumi up` leaves it: instances tagged with the stack, each with the
stack's alarms (from infra's own alarm specs), the alert topic with an email subscription and an inbox queue,
the auto-reboot function, and the results bucket; plus what the running pieces send (canary samples, agent
datapoints, pushes) and State Manager's runs (which moto lacks: tests/support/ssm_associations.py).

Each instance's address is a loopback one (a moto VPC on 127.0.0.0/24, no public address), so the banner
check that `trainguard status` makes reaches only this machine.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from moto.s3.models import s3_backends
from moto.sns.models import sns_backends

from healthcheck import contract
from infra.alarm_specs import instance_alarms
from infra.settings import validate
from tests.support.ssm_associations import StateManager, state_manager

STACK = "dev"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
EMAIL = "oncall@example.com"
SETTINGS = validate({"alertEmails": [EMAIL], "sshAllowedCidrs": ["10.0.0.0/8"], "keyName": "k"})


@dataclass
class Deployed:
    ec2: Any
    cloudwatch: Any
    sns: Any
    sqs: Any
    s3: Any
    topic_arn: str
    function_arn: str
    bucket: str
    inbox_url: str
    subnet: str
    state_manager: StateManager
    instances: list[str] = field(default_factory=list)

    def launch(self, address: str, *, alarms: bool = True) -> str:
        """An instance of the stack at a loopback address, with every alarm the stack gives it (in
        INSUFFICIENT_DATA, as new alarms are)."""
        index = len(self.instances)
        instance_id = str(
            self.ec2.run_instances(
                ImageId="ami-0123456789abcdef0",
                MinCount=1,
                MaxCount=1,
                InstanceType="g5.xlarge",
                SubnetId=self.subnet,
                PrivateIpAddress=address,
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": "Name", "Value": f"trainguard-{STACK}-{index}"},
                            {"Key": contract.STACK_TAG_KEY, "Value": STACK},
                            {"Key": contract.MANAGED_TAG_KEY, "Value": contract.MANAGED_TAG_VALUE},
                        ],
                    }
                ],
            )["Instances"][0]["InstanceId"]
        )
        self.instances.append(instance_id)
        for spec in instance_alarms(SETTINGS, can_recover=True) if alarms else ():
            self.cloudwatch.put_metric_alarm(
                AlarmName=contract.instance_alarm_name(STACK, instance_id, spec.key),
                AlarmDescription=spec.describe(instance_id, self.bucket, REGION),
                Namespace=spec.namespace,
                MetricName=spec.metric_name,
                Dimensions=[
                    {"Name": name, "Value": value}
                    for name, value in {contract.INSTANCE_DIMENSION: instance_id, **spec.extra_dimensions}.items()
                ],
                Statistic=spec.statistic,
                Period=spec.period,
                EvaluationPeriods=spec.evaluation_periods,
                DatapointsToAlarm=spec.datapoints_to_alarm,
                Threshold=spec.threshold,
                ComparisonOperator=spec.comparison_operator,
                TreatMissingData=spec.treat_missing_data,
                AlarmActions=[self.topic_arn, *([self.function_arn] if spec.invokes_auto_reboot else [])],
                OKActions=[self.topic_arn],
            )
            self.set_alarm(instance_id, spec.key, "INSUFFICIENT_DATA")  # where AWS starts a new alarm; moto: OK
        return instance_id

    def applied(self, instance_id: str, version: str, status: str = "Success") -> None:
        """State Manager ran the stack's bundle association on the instance."""
        name = contract.bundle_association_name(f"trainguard-{self.instances.index(instance_id)}", STACK)
        self.state_manager.applied(instance_id, name, version, status)

    def alarm_names(self, instance_id: str) -> list[str]:
        prefix = contract.instance_alarm_name(STACK, instance_id, "")
        pages = self.cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
        return [alarm["AlarmName"] for page in pages for alarm in page["MetricAlarms"]]

    def set_alarm(self, instance_id: str, key: str, state: str, reason: str = "a test set it") -> None:
        self.cloudwatch.set_alarm_state(
            AlarmName=contract.instance_alarm_name(STACK, instance_id, key), StateValue=state, StateReason=reason
        )

    def watched(
        self, instance_id: str, *, push_minutes_ago: float = 2, workers: list[dict[str, Any]] | None = None
    ) -> None:
        """What a healthy instance looks like a few minutes after boot: every alarm OK, the canary hearing sshd,
        the agent reporting, a push two minutes ago."""
        for name in self.alarm_names(instance_id):
            self.cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="a test set it")
        self.canary(instance_id, 1.0)
        self.agent(instance_id)
        self.push(instance_id, push_minutes_ago, workers)

    def canary(self, instance_id: str, value: float, seconds_ago: float = 20) -> None:
        now = datetime.now(timezone.utc)
        self.cloudwatch.put_metric_data(
            Namespace=contract.CANARY_NAMESPACE,
            MetricData=[
                {
                    "MetricName": contract.SSH_RESPONSIVE_METRIC,
                    "Dimensions": [{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
                    "Timestamp": now - timedelta(seconds=seconds_ago + back),
                    "Value": value,
                    "StorageResolution": 1,
                }
                for back in (0, 10, 20)
            ],
        )

    def agent(self, instance_id: str, seconds_ago: float = 30) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=contract.AGENT_NAMESPACE,
            MetricData=[
                {
                    "MetricName": contract.MEMORY_METRIC,
                    "Dimensions": [{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
                    "Timestamp": datetime.now(timezone.utc) - timedelta(seconds=seconds_ago),
                    "Value": 41.5,
                }
            ],
        )

    def kills(self, instance_id: str, count: int) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=contract.GUARD_NAMESPACE,
            MetricData=[
                {
                    "MetricName": contract.OOM_KILLS_METRIC,
                    "Dimensions": [{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
                    "Timestamp": datetime.now(timezone.utc) - timedelta(minutes=10),
                    "Value": 1.0,
                }
                for _ in range(count)
            ],
        )

    def push(self, instance_id: str, minutes_ago: float, workers: list[dict[str, Any]] | None = None) -> None:
        """A push `minutes_ago`: a result in worker-0's folder, the guard's workers record and the push record."""
        keys = {f"{instance_id}/{contract.WORKER_DIR_PREFIX}0/metrics.csv": b"epoch,loss\n1,0.5\n"}
        if workers is not None:
            record = {"version": 1, "instance_id": instance_id, "updated": "2026-12-07T10:00:00Z", "workers": workers}
            keys[f"{instance_id}/{contract.WORKERS_STATE_NAME}"] = json.dumps(record).encode()
        keys[f"{instance_id}/{contract.PUSH_RECORD_NAME}"] = b'{"pushed": 1}'
        for key, body in keys.items():
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            self.age_object(key, minutes_ago)

    def age_object(self, key: str, minutes: float) -> None:
        """Make an object look `minutes` old: moto stamps every upload with its own now."""
        stored = s3_backends[ACCOUNT]["global"].buckets[self.bucket].keys[key]
        stored.last_modified = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=minutes)

    def subscription_pending(self, endpoint: str) -> None:
        """What AWS shows until the person clicks the link; moto confirms every subscription at once."""
        for subscription in sns_backends[ACCOUNT][REGION].subscriptions.values():
            if subscription.endpoint == endpoint:
                subscription.arn = "PendingConfirmation"

    def inbox(self) -> list[dict[str, Any]]:
        """Every alert the queue subscribed to the topic received."""
        found = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.inbox_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(json.loads(message["Body"])["Message"]))
                self.sqs.delete_message(QueueUrl=self.inbox_url, ReceiptHandle=message["ReceiptHandle"])


def _function_zip() -> bytes:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    return packed.getvalue()


@pytest.fixture
def deployed(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    """The stack `dev` in eu-west-1 on moto's server; AWS_REGION points the CLI there."""
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv(contract.BUCKET_VARIABLE, raising=False)

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=moto_server)

    ec2, sns, sqs, s3, iam = client("ec2"), client("sns"), client("sqs"), client("s3"), client("iam")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    topic_arn = sns.create_topic(Name=f"trainguard-{STACK}-alerts")["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=EMAIL)
    inbox_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    bucket = f"trainguard-{STACK}-results"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    role = iam.create_role(RoleName="auto-reboot", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    function_arn = client("lambda").create_function(
        FunctionName=f"trainguard-{STACK}-auto-reboot",
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": _function_zip()},
        Environment={
            "Variables": {
                contract.BUCKET_VARIABLE: bucket,
                contract.TOPIC_ARN_VARIABLE: topic_arn,
                contract.MAX_REBOOTS_VARIABLE: "3",
                contract.REBOOT_WINDOW_HOURS_VARIABLE: "6",
            }
        },
    )["FunctionArn"]
    with state_manager() as manager:
        yield Deployed(
            ec2, client("cloudwatch"), sns, sqs, s3, topic_arn, function_arn, bucket, inbox_url, subnet, manager
        )
