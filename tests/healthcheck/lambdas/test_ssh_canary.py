"""The SSH canary against real sshd on loopback, publishing to moto CloudWatch."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck.lambdas.ssh_canary import Canary, handler

REGION = "eu-west-1"
INTERVAL = 2.0  # seconds between samples here; a sample must be decided within half of it


class LambdaContext:
    """The one method of the Lambda context object the canary uses."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - time.monotonic()) * 1000)


@pytest.fixture
def cloudwatch(aws_credentials: str) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """moto CloudWatch, and every PutMetricData request as the client sent it."""
    with mock_aws():
        client = boto3.client("cloudwatch", region_name=REGION)
        sent: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.cloudwatch.PutMetricData", lambda params, **_: sent.append(params)
        )
        yield client, sent


def _values(client: Any, metric: str, instance_id: str) -> list[float]:
    stats = client.get_metric_statistics(
        Namespace="Trainguard",
        MetricName=metric,
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        StartTime=time.time() - 3600,
        EndTime=time.time() + 60,
        Period=1,
        Statistics=["Minimum", "Maximum", "SampleCount"],
    )["Datapoints"]
    return sorted(point["Maximum"] for point in stats)


def test_healthy_sshd_is_1_and_a_frozen_one_is_0(cloudwatch, make_server) -> None:
    client, _ = cloudwatch
    healthy, frozen = make_server(), make_server()
    frozen.sshd.freeze()
    event = {
        "targets": [
            {"instance_id": "i-0000000000000000a", "address": "127.0.0.1", "port": healthy.port},
            {"instance_id": "i-0000000000000000b", "address": "127.0.0.1", "port": frozen.port},
        ],
        "samples": 2,
    }

    summary = handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL))

    assert summary["rounds"] == [{"i-0000000000000000a": True, "i-0000000000000000b": False}] * 2
    assert _values(client, "SSHResponsive", "i-0000000000000000a") == [1.0, 1.0]
    assert _values(client, "SSHResponsive", "i-0000000000000000b") == [0.0, 0.0]
    frozen_seconds = _values(client, "SSHBannerSeconds", "i-0000000000000000b")
    assert all(INTERVAL / 2 - 0.05 <= s <= INTERVAL / 2 + 0.3 for s in frozen_seconds), frozen_seconds


def test_a_trickled_banner_is_0_within_the_deadline(cloudwatch, line_server) -> None:
    client, _ = cloudwatch

    def trickle(conn: socket.socket, _: int) -> None:
        for byte in b"SSH-2.0-OpenSSH_9.2\r\n":
            conn.sendall(bytes([byte]))
            time.sleep(0.5)

    server = line_server(trickle)
    event = {
        "targets": [{"instance_id": "i-0000000000000000c", "address": "127.0.0.1", "port": server.port}],
        "samples": 1,
    }
    started = time.monotonic()

    summary = handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL))

    assert summary["rounds"] == [{"i-0000000000000000c": False}]
    assert time.monotonic() - started < INTERVAL / 2 + 0.5


def test_samples_stop_when_the_lambda_runs_short_of_time(cloudwatch, make_server) -> None:
    client, _ = cloudwatch
    server = make_server()
    event = {
        "targets": [{"instance_id": "i-0000000000000000d", "address": "127.0.0.1", "port": server.port}],
        "samples": 6,
    }
    context = LambdaContext(7.5)
    started = time.monotonic()

    summary = handler(event, context, canary=Canary(client, interval=INTERVAL))

    # Rounds start at 0, 2, 4 s; a round at 6 s would need 1 s to probe and 2 s in reserve, past 7.5 s.
    assert len(summary["rounds"]) == 3
    assert time.monotonic() - started < 7.5
    assert context.get_remaining_time_in_millis() > 0


def test_metrics_are_high_resolution_and_dimensioned_by_instance_only(cloudwatch, make_server) -> None:
    client, sent = cloudwatch
    server = make_server()
    event = {
        "targets": [{"instance_id": "i-0000000000000000e", "address": "127.0.0.1", "port": server.port}],
        "samples": 1,
    }

    handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL))

    (request,) = sent
    assert request["Namespace"] == "Trainguard"
    by_name = {datum["MetricName"]: datum for datum in request["MetricData"]}
    assert set(by_name) == {"SSHResponsive", "SSHBannerSeconds"}
    for datum in by_name.values():
        assert datum["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0000000000000000e"}]
        assert datum["StorageResolution"] == 1
    assert by_name["SSHResponsive"]["Value"] == 1.0
    assert by_name["SSHBannerSeconds"]["Unit"] == "Seconds"
    listed = client.list_metrics(Namespace="Trainguard")["Metrics"]
    assert {m["MetricName"] for m in listed} == {"SSHResponsive", "SSHBannerSeconds"}


def test_discovery_finds_running_managed_instances_at_their_private_address(cloudwatch) -> None:
    client, _ = cloudwatch
    ec2 = boto3.client("ec2", region_name=REGION)

    def launch(tags: list[dict[str, str]]) -> str:
        return str(
            ec2.run_instances(
                ImageId="ami-0123456789abcdef0",
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )["Instances"][0]["InstanceId"]
        )

    managed = launch([{"Key": "trainguard:managed", "Value": "true"}])
    stopped = launch([{"Key": "trainguard:managed", "Value": "true"}])
    launch([{"Key": "Name", "Value": "someone-else"}])
    ec2.stop_instances(InstanceIds=[stopped])

    targets = Canary(client, ec2, interval=INTERVAL).discover()

    assert [t.instance_id for t in targets] == [managed]
    assert targets[0].port == 22
    assert targets[0].address.startswith(("10.", "172.", "192.168."))  # never connected to: moto invents it


def test_no_targets_publishes_nothing(cloudwatch) -> None:
    client, sent = cloudwatch

    summary = handler({"targets": []}, LambdaContext(30), canary=Canary(client, interval=INTERVAL))

    assert summary == {"targets": 0, "rounds": []}
    assert sent == []
