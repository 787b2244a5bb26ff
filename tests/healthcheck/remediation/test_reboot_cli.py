"""`trainguard reboot`: the same decision and sequence as the Lambda, from a laptop (under moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from healthcheck import contract

REGION = "eu-west-1"


@pytest.fixture
def ec2(aws_credentials: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # The instance was just launched; a manual reboot of it is not held back by the grace period here.
    monkeypatch.setenv("TRAINGUARD_BOOT_GRACE_SECONDS", "0")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def _instance(ec2: Any, managed: bool = True, history: str | None = None) -> str:
    tags = [{"Key": "trainguard:managed", "Value": "true"}] if managed else [{"Key": "Name", "Value": "x"}]
    if history:
        tags.append({"Key": contract.HISTORY_TAG_KEY, "Value": history})
    return str(
        ec2.run_instances(
            ImageId="ami-0123456789abcdef0",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )


def _history(ec2: Any, instance_id: str) -> str:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == contract.HISTORY_TAG_KEY), "")


def test_yes_runs_the_sequence_and_prints_each_step(ec2, run_cli) -> None:
    instance_id = _instance(ec2)

    run = run_cli("reboot", instance_id, "--yes", "--reason", "loss went NaN and ssh hangs")

    assert run.code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"{instance_id}: reboot: the alarm says the instance is hung"
    steps = [line.split()[0] for line in lines[1:]]
    assert steps == ["console", "snapshot", "post-mortem", "reboot", "record", "email"]
    assert "post-mortem     skipped no bucket configured" in run.stdout
    assert "email           skipped no topic configured" in run.stdout
    assert ":R:" in _history(ec2, instance_id)


def test_dry_run_changes_nothing(ec2, run_cli) -> None:
    instance_id = _instance(ec2)

    run = run_cli("reboot", instance_id, "--dry-run")

    assert run.code == 0
    assert "snapshot every EBS volume (kept 21 days)" in run.stdout
    assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert _history(ec2, instance_id) == ""


def test_without_a_terminal_it_asks_for_yes(ec2, run_cli) -> None:
    instance_id = _instance(ec2)

    run = run_cli("reboot", instance_id)

    assert run.code == 3
    assert "pass --yes" in run.stderr
    assert _history(ec2, instance_id) == ""


def test_the_managed_tag_rule_applies(ec2, run_cli) -> None:
    instance_id = _instance(ec2, managed=False)

    run = run_cli("reboot", instance_id, "--yes", "--force")

    assert run.code == 1
    assert "skip: not managed" in run.stdout


def test_the_budget_applies_and_force_lifts_it(ec2, run_cli) -> None:
    import time

    now = int(time.time())
    spent = " ".join(f"{now - hours * 3600}:R:0000000{hours}" for hours in (3, 2, 1))
    instance_id = _instance(ec2, history=spent)

    refused = run_cli("reboot", instance_id, "--dry-run")
    forced = run_cli("reboot", instance_id, "--yes", "--force")

    assert refused.code == 2
    assert "give up: reboot budget exhausted" in refused.stdout
    assert forced.code == 0, forced.stdout
    assert "escalate to stop/start" in forced.stdout
    assert "stop            done" in forced.stdout


def test_bad_instance_ids_are_bad_input(ec2, run_cli) -> None:
    malformed = run_cli("reboot", "web-1", "--yes")
    unknown = run_cli("reboot", "i-0123456789abcdef0", "--yes")

    assert (malformed.code, unknown.code) == (3, 3)
    assert "is not an instance id" in malformed.stderr
    assert "unknown instance id" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
