"""`i-` targets: looked up with boto3 (under moto), then probed at an injected loopback address.

moto invents addresses for instances; the probe must never connect to them. Each
test gives its instance 127.0.0.1 through the EC2 API itself (an Elastic IP, or
a private address in a loopback-range subnet), so the real lookup path runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck.probe.sandbox import free_ports

REGION = "eu-west-1"


@pytest.fixture
def aws(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


IMAGE_ID = "ami-0123456789abcdef0"  # moto runs instances from any image id


def _instance_in_subnet(ec2: Any, private_ip: str | None = None) -> str:
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    extra = {"PrivateIpAddress": private_ip} if private_ip else {}
    reservation = ec2.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, SubnetId=subnet, **extra)
    return reservation["Instances"][0]["InstanceId"]


def _instance_at_loopback(ec2: Any) -> str:
    """A running instance whose public address (an Elastic IP) is 127.0.0.1."""
    instance_id = _instance_in_subnet(ec2)
    allocation = ec2.allocate_address(Domain="vpc", Address="127.0.0.1")["AllocationId"]
    ec2.associate_address(InstanceId=instance_id, AllocationId=allocation)
    return instance_id


def test_instance_is_probed_at_its_public_address_with_state_and_status_checks(aws, server, run_cli) -> None:
    instance_id = _instance_at_loopback(aws)

    run = run_cli("probe", "--json", "-l", server.sshd.user, "-p", str(server.port), *server.args(instance_id))

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY")
    assert run.result["target"] == f"{server.sshd.user}@{instance_id}:{server.port}"
    assert run.result["ec2"] == {
        "instance_id": instance_id,
        "state": "running",
        "address": "127.0.0.1",
        "system_status": "ok",
        "instance_status": "ok",
    }
    assert "status checks: system ok, instance ok" in run.result["stages"][0]["detail"]


def test_private_flag_uses_the_private_address(aws, server, run_cli) -> None:
    instance_id = _instance_in_subnet(aws, private_ip="127.0.0.1")

    run = run_cli(
        "probe", "--json", "--private", "-l", server.sshd.user, "-p", str(server.port), *server.args(instance_id)
    )

    assert (run.code, run.result["verdict"], run.result["ec2"]["address"]) == (0, "HEALTHY", "127.0.0.1")


def test_frozen_instance_is_hung_and_the_report_carries_its_ec2_view(aws, server, run_cli) -> None:
    instance_id = _instance_at_loopback(aws)
    server.sshd.freeze()

    run = run_cli("probe", "--timeout", "2", "-l", server.sshd.user, "-p", str(server.port), *server.args(instance_id))

    assert run.code == 2
    assert "HUNG" in run.stdout
    assert f"EC2:           {instance_id} running, system status ok, instance status ok" in run.stdout


def test_stopped_instance_is_not_running(aws, run_cli) -> None:
    instance_id = _instance_at_loopback(aws)
    aws.stop_instances(InstanceIds=[instance_id])

    run = run_cli("probe", "--json", "--no-login", instance_id)

    assert (run.code, run.result["verdict"]) == (2, "NOT_RUNNING")
    assert run.result["ec2"]["state"] == "stopped"
    assert [stage["name"] for stage in run.result["stages"]] == ["resolve"]


def test_instance_without_a_public_address_points_to_private(aws, run_cli) -> None:
    instance_id = _instance_in_subnet(aws)

    run = run_cli("probe", "--json", "--no-login", instance_id)

    assert (run.code, run.result["verdict"]) == (3, "UNKNOWN_HOST")
    assert "no public address; from inside its VPC, pass --private" in run.result["summary"]


def test_unknown_instance_id_is_bad_input(aws, run_cli) -> None:
    run = run_cli("probe", "--no-login", "i-0123456789abcdef0")

    assert (run.code, run.stdout) == (3, "")
    assert run.stderr.count("\n") == 1
    assert "unknown instance id" in run.stderr
    assert "--region" in run.stderr


def test_unreachable_ec2_api_makes_the_target_unknown_host(run_cli, monkeypatch) -> None:
    (closed,) = free_ports(1)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{closed}")

    run = run_cli("probe", "--json", "--no-login", "--region", REGION, "--timeout", "2", "i-0123456789abcdef0")

    assert (run.code, run.result["verdict"]) == (3, "UNKNOWN_HOST")
    assert "EC2 lookup failed" in run.result["summary"]


def test_boto3_is_imported_only_for_instance_targets(server) -> None:
    code = (
        "import sys; from healthcheck.cli import main; "
        f"main(['probe', '--no-login', '127.0.0.1:{server.port}']); "
        "print('boto3 imported' if 'boto3' in sys.modules else 'boto3 not imported')"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert completed.stdout.strip().endswith("boto3 not imported")
