"""EC2 instance lookup for `i-...` targets: address, state and status checks in two API calls.

botocore is imported only when an `i-` target is probed: it costs a third of a
second that a plain probe should not pay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from healthcheck import aws
from healthcheck.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from healthcheck.probe.canary import CanaryView


@dataclass(frozen=True)
class Instance:
    """What EC2 says about one instance."""

    instance_id: str
    state: str
    public_ip: str | None
    private_ip: str | None
    system_status: str
    instance_status: str

    def address(self, private: bool) -> str | None:
        return self.private_ip if private else self.public_ip

    def report(self, private: bool) -> dict[str, Any]:
        """The `ec2` object of a probe result."""
        return {
            "instance_id": self.instance_id,
            "state": self.state,
            "address": self.address(private),
            "system_status": self.system_status,
            "instance_status": self.instance_status,
        }


@dataclass(frozen=True)
class Lookup:
    """What one round's EC2 lookup says about one instance: the instance, or why it is not known."""

    seconds: float
    instance: Instance | None = None
    failure: str | None = None
    # Asks the stack's SSH canary about the instance (CloudWatch), only when its port is silent from here;
    # None where it cannot be asked.
    canary: Callable[[], CanaryView | None] | None = None


class LookupFailed(Exception):
    """EC2 could not be asked (network, throttling): the targets are UNKNOWN_HOST, not bad input."""


def look_up(client: EC2Client, instance_ids: list[str]) -> dict[str, Lookup]:
    """One batch lookup for every id; a failure to ask EC2 is recorded per id, bad input raises."""
    started = time.monotonic()
    try:
        found, failure = describe(client, instance_ids), None
    except LookupFailed as error:
        found, failure = {}, str(error)
    seconds = time.monotonic() - started
    return {
        instance_id: Lookup(
            seconds=seconds,
            instance=found.get(instance_id),
            failure=failure or (None if instance_id in found else f"EC2 did not return {instance_id}"),
        )
        for instance_id in instance_ids
    }


def make_client(region: str | None, timeout: float, instance_ids: list[str]) -> EC2Client:
    """An EC2 client whose every call is bounded by the probe's timeout, with one retry."""
    bound = max(timeout, 1.0)
    purpose = "to look up " + ", ".join(instance_ids)
    return cast("EC2Client", aws.client("ec2", purpose=purpose, region=region, limits=aws.Limits(bound, bound, 2)))


def describe(client: EC2Client, instance_ids: list[str]) -> dict[str, Instance]:
    """Every id's state, addresses and status checks; an id that does not exist is bad input."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        with aws.refusals_as_usage("to look up " + ", ".join(instance_ids)):
            reservations = client.describe_instances(InstanceIds=instance_ids)["Reservations"]
            statuses = client.describe_instance_status(InstanceIds=instance_ids, IncludeAllInstances=True)[
                "InstanceStatuses"
            ]
    except ClientError as error:
        code = aws.error_code(error)
        if code.startswith("InvalidInstanceID"):
            raise UsageError(
                f"unknown instance id ({error.response['Error'].get('Message', code)}): "
                "check the id and the region (--region)"
            ) from None
        raise LookupFailed(f"EC2 lookup failed: {code or error}") from None
    except BotoCoreError as error:
        raise LookupFailed(f"EC2 lookup failed: {error}") from None

    checks = {
        status["InstanceId"]: (
            status.get("SystemStatus", {}).get("Status", "unknown"),
            status.get("InstanceStatus", {}).get("Status", "unknown"),
        )
        for status in statuses
    }
    found = {}
    for reservation in reservations:
        for instance in reservation["Instances"]:
            instance_id = instance["InstanceId"]
            system_status, instance_status = checks.get(instance_id, ("unknown", "unknown"))
            found[instance_id] = Instance(
                instance_id=instance_id,
                state=instance["State"]["Name"],
                public_ip=instance.get("PublicIpAddress"),
                private_ip=instance.get("PrivateIpAddress"),
                system_status=system_status,
                instance_status=instance_status,
            )
    return found
