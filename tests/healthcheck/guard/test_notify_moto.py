"""The notifier's real AWS CLI v1 calls, against moto's server on 127.0.0.1: the email and the metric arrive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from healthcheck.guard import notify
from healthcheck.guard.host import Host, run_command

from .fakes import GIB, FakeMachine

REGION = "eu-west-1"

pytestmark = pytest.mark.skipif(not shutil.which("aws"), reason="no AWS CLI on PATH (the instances have v1)")


def test_email_and_metric_reach_sns_and_cloudwatch(moto_server: str, tmp_path: Path) -> None:
    import boto3

    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_server)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    topic_arn = sns.create_topic(Name="trainguard-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    machine = FakeMachine(tmp_path)
    machine.set_worker_memory(1, GIB)
    logged: list[str] = []
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=machine.cgroup_root)
    notifier = notify.Notifier(host, "i-0123456789abcdef0", topic_arn, which=lambda name: None, log=logged.append)

    notifier.handle(notify.Kill(by="kernel", unit="trainguard-worker-3.service", worker=3))

    assert "trainguard-guard: metric: ok" in logged, logged
    assert "trainguard-guard: email: ok" in logged, logged
    received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    envelope = json.loads(received[0]["Body"])
    assert envelope["Subject"] == "trainguard: worker 3 on i-0123456789abcdef0 killed: out of memory"
    assert "still running:     workers 1" in envelope["Message"]
    metrics = cloudwatch.list_metrics(Namespace="Trainguard/Guard", MetricName="WorkerOOMKills")["Metrics"]
    assert metrics[0]["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123456789abcdef0"}]
