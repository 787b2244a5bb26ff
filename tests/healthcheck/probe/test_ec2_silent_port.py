"""For `i-` targets: EC2's view explains a silent port, and AWS_REGION is read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck.probe.prober import KERNEL_CHECK_PORTS

REGION = "eu-west-1"
IMAGE_ID = "ami-0123456789abcdef0"
# An address of its own in 127.0.0.0/8, so the ports it takes clash with no other test.
SILENT_HOST = "127.0.0.77"


@pytest.fixture
def aws(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def _instance_at(ec2: Any, private_ip: str) -> str:
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    reservation = ec2.run_instances(
        ImageId=IMAGE_ID, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=private_ip
    )
    return str(reservation["Instances"][0]["InstanceId"])


def _silent_port(port: int = 0) -> tuple[socket.socket, list[socket.socket]]:
    """A port on SILENT_HOST whose accept queue is full: the kernel drops every new handshake."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((SILENT_HOST, port))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    return listener, fillers


@pytest.fixture
def silent_instance_ports() -> Iterator[int]:
    """The SSH port and every port the kernel check tries are silent: only EC2 can tell the host is up."""
    held = []
    try:
        for port in KERNEL_CHECK_PORTS:
            held.append(_silent_port(port))
    except PermissionError:
        pytest.skip("binding ports below 1024 needs root")
    except OSError as error:
        pytest.skip(f"cannot hold {SILENT_HOST} ports {KERNEL_CHECK_PORTS}: {error}")
    ssh = _silent_port()
    held.append(ssh)
    yield ssh[0].getsockname()[1]
    for listener, fillers in held:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_silent_port_on_an_instance_ec2_calls_healthy_says_the_queue_may_be_full(
    aws, silent_instance_ports: int, run_cli
) -> None:
    instance_id = _instance_at(aws, SILENT_HOST)

    run = run_cli(
        "probe", "--json", "--no-login", "--private", "--timeout", "2", "-p", str(silent_instance_ports), instance_id
    )

    assert (run.code, run.result["verdict"]) == (2, "HUNG"), run.result
    summary = run.result["summary"]
    assert "the port is silent while EC2 reports" in summary and "status checks passing" in summary
    assert "consistent with a frozen sshd whose listen queue is full" in summary


def test_aws_region_is_read_as_well_as_aws_default_region(aws, server, run_cli, monkeypatch) -> None:
    instance_id = _instance_at(aws, "127.0.0.1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", REGION)

    run = run_cli("probe", "--json", "--no-login", "--private", "-p", str(server.port), instance_id)

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result
    assert run.result["ec2"]["instance_id"] == instance_id
