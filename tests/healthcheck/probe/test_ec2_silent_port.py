"""For `i-` targets: EC2's and the stack's canary's views explain a silent port; AWS_REGION is read."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck.probe.prober import KERNEL_CHECK_PORTS

REPO = Path(__file__).resolve().parents[3]
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
    # No canary sample here: nothing tells a frozen sshd from a dropped address, and the summary says so.
    assert "before rebooting, see that trainguard status shows its SSH alarm firing" in summary


def test_aws_region_is_read_as_well_as_aws_default_region(aws, server, run_cli, monkeypatch) -> None:
    instance_id = _instance_at(aws, "127.0.0.1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", REGION)

    run = run_cli("probe", "--json", "--no-login", "--private", "-p", str(server.port), instance_id)

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result
    assert run.result["ec2"]["instance_id"] == instance_id


# Inside a network namespace of its own: the instance's address is routed into a veth pair whose far end has
# no address (and a fixed neighbour, so no ARP failure speaks up), so every packet to it vanishes, as a
# security group's drop does; moto's server runs in the namespace's own loopback, holding the canary's samples.
SCENARIO = """
import json, sys
from datetime import datetime, timedelta, timezone
import boto3
from moto.server import ThreadedMotoServer
from healthcheck.cli import main

canary_value = float(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
endpoint = f"http://{host}:{port}"
import os
os.environ["AWS_ENDPOINT_URL"] = endpoint
ec2 = boto3.client("ec2", region_name="eu-west-1")
vpc = ec2.create_vpc(CidrBlock="203.0.113.0/24")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="203.0.113.0/24")["Subnet"]["SubnetId"]
instance = ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, SubnetId=subnet,
                             PrivateIpAddress="203.0.113.7")["Instances"][0]["InstanceId"]
cloudwatch = boto3.client("cloudwatch", region_name="eu-west-1")
now = datetime.now(timezone.utc)
cloudwatch.put_metric_data(Namespace="Trainguard", MetricData=[{
    "MetricName": "SSHResponsive", "Dimensions": [{"Name": "InstanceId", "Value": instance}],
    "Timestamp": now - timedelta(seconds=seconds), "Value": canary_value, "StorageResolution": 1}
    for seconds in (40, 30, 20)])
cloudwatch.put_metric_alarm(
    AlarmName=f"trainguard-test-{instance}-ssh-unresponsive", Namespace="Trainguard", MetricName="SSHResponsive",
    Dimensions=[{"Name": "InstanceId", "Value": instance}], Statistic="Minimum", Period=10, EvaluationPeriods=8,
    DatapointsToAlarm=6, Threshold=1, ComparisonOperator="LessThanThreshold")
if canary_value == 0:
    cloudwatch.set_alarm_state(AlarmName=f"trainguard-test-{instance}-ssh-unresponsive", StateValue="ALARM",
                               StateReason="6 of 8 datapoints")
sys.exit(main(["probe", "--json", "--no-login", "--private", "--timeout", "4", instance]))
"""


@pytest.fixture
def dropping_namespace() -> Iterator[str]:
    """A network namespace where 203.0.113.0/24 is routed into a veth pair that answers nothing."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2")
    name = f"tg-{uuid.uuid4().hex[:8]}"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "link", "add", "drop0", "type", "veth", "peer", "name", "drop1"],
        ["ip", "-n", name, "link", "set", "drop0", "up"],
        ["ip", "-n", name, "link", "set", "drop1", "up"],
        ["ip", "-n", name, "route", "add", "203.0.113.0/24", "dev", "drop0"],
        ["ip", "-n", name, "neigh", "add", "203.0.113.7", "lladdr", "02:00:00:00:00:07", "dev", "drop0"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot build the namespace ({' '.join(step)}): {done.stderr.strip()}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def probe_in(namespace: str, canary_value: float) -> dict[str, Any]:
    environment = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    ran = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SCENARIO, str(canary_value)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.stdout, ran.stderr
    (result,) = json.loads(ran.stdout)["results"]
    return {**result, "exit": ran.returncode}


def test_a_port_the_security_group_drops_while_the_canary_hears_sshd_is_not_a_frozen_host(
    aws_credentials: str, dropping_namespace: str
) -> None:
    result = probe_in(dropping_namespace, 1.0)

    assert (result["exit"], result["verdict"]) == (3, "ADDRESS_NOT_ALLOWED"), result["summary"]
    assert "the stack's SSH canary, inside the VPC, heard sshd answer" in result["summary"]
    assert "trainguard:sshAllowedCidrs" in result["next_step"]
    assert "reboot" not in result["next_step"].replace("Do not reboot", "")


def test_a_silent_port_the_canary_cannot_hear_either_is_hung_and_says_the_auto_reboot_is_on_it(
    aws_credentials: str, dropping_namespace: str
) -> None:
    result = probe_in(dropping_namespace, 0.0)

    assert (result["exit"], result["verdict"]) == (2, "HUNG"), result["summary"]
    assert "the stack's SSH canary heard no banner either" in result["summary"]
    assert (
        "has been in ALARM since" in result["summary"] and "auto-reboot function is acting on it" in result["summary"]
    )
    assert "trainguard reboot" in result["next_step"] and "trainguard pull DEST --postmortem" in result["next_step"]
