"""Pulumi unit-test mocks: the stack is built with neither the Pulumi CLI nor a cloud, and every resource recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from infra.settings import Settings

ACCOUNT_ID = "123456789012"
REGION = "eu-west-1"
DLAMI_ID = "ami-0dee9dee9dee9dee9"


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    id: str
    outputs: dict[str, Any] = field(default_factory=dict)  # what the mocks answered, as AWS would


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every resource and lookup the way AWS would, and remembers what was asked for."""

    auto_recovery: bool = False
    architectures: tuple[str, ...] = ("x86_64",)
    # Zones that offer the instance type, the CloudWatch interface endpoint and (its endpoint standing for it)
    # Lambda in a VPC; and where the configured subnet's route table sends 0.0.0.0/0 (None: nowhere).
    type_zones: tuple[str, ...] = (f"{REGION}a", f"{REGION}b")
    monitoring_zones: tuple[str, ...] = (f"{REGION}a", f"{REGION}b", f"{REGION}c")
    lambda_zones: tuple[str, ...] = (f"{REGION}a", f"{REGION}b", f"{REGION}c")
    subnet_zone: str = f"{REGION}a"
    default_route: dict[str, str] | None = field(default_factory=lambda: {"gatewayId": "igw-0123456789abcdef0"})
    subnet_has_own_route_table: bool = True
    resources: list[Recorded] = field(default_factory=list)
    # Resource options by resource name, as the program set them (recorded by a transformation).
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        number = len(self.resources) + 1
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ == "aws:ec2/instance:Instance":
            resource_id = f"i-{number:017x}"
            outputs["publicIp"] = f"198.51.100.{number}"
            outputs["privateIp"] = f"172.31.{number // 250}.{number % 250 + 4}"  # never connected to
            outputs["arn"] = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{resource_id}"
        elif args.typ == "aws:ec2/eip:Eip":
            resource_id = f"eipalloc-{number:017x}"
            outputs["publicIp"] = f"203.0.113.{number % 250}"
        elif args.typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            resource_id = f"vpce-{number:017x}"
            service = str(args.inputs.get("serviceName", "")).rsplit(".", 1)[-1]
            outputs["dnsEntries"] = [
                {"dnsName": f"{resource_id}-abcdefgh.{service}.{REGION}.vpce.amazonaws.com", "hostedZoneId": "Z1"},
                {"dnsName": f"{resource_id}-abcdefgh-{REGION}a.{service}.{REGION}.vpce.amazonaws.com"},
            ]
        elif args.typ == "aws:ebs/volume:Volume":
            resource_id = f"vol-{number:017x}"
        elif args.typ == "aws:s3/bucket:Bucket":
            resource_id = "trainguard-results-20261129"
            outputs["bucket"] = resource_id
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = f"{args.name}-key"
        service = args.typ.split(":")[1].split("/")[0]
        arn_id = outputs.get("bucket", resource_id)
        outputs.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{arn_id}")
        if args.typ == "aws:s3/bucket:Bucket":
            outputs["arn"] = f"arn:aws:s3:::{arn_id}"
        outputs.setdefault("keyId", resource_id)
        outputs.setdefault("name", args.name)  # AWS names what the program leaves unnamed
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), resource_id, outputs))
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        filters = {f["name"]: f["values"] for f in args.args.get("filters", [])}
        endpoint_zones = {"monitoring": self.monitoring_zones, "lambda": self.lambda_zones}
        routes = [] if self.default_route is None else [{"cidrBlock": "0.0.0.0/0", **self.default_route}]
        own_table = self.subnet_has_own_route_table or "association.main" in filters
        answers: dict[str, dict[str, Any]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/deployer",
                "userId": "AIDEXAMPLE",
                "id": ACCOUNT_ID,
            },
            "aws:index/getPartition:getPartition": {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"},
            "aws:index/getRegion:getRegion": {"region": REGION, "name": REGION, "id": REGION},
            "aws:ec2/getInstanceType:getInstanceType": {
                "instanceType": args.args.get("instanceType"),
                "autoRecoverySupported": self.auto_recovery,
                "supportedArchitectures": list(self.architectures),
                "instanceStorageSupported": not self.auto_recovery,
                "gpuses": [{"count": 1, "manufacturer": "NVIDIA", "name": "A10G", "memorySize": 24576}],
            },
            "aws:ec2/getAmi:getAmi": {"id": DLAMI_ID, "imageId": DLAMI_ID},
            "aws:ec2/getVpc:getVpc": {"id": "vpc-0000000000000def0"},
            # The default VPC's default subnets in the zones asked for (a: ...aaaa, b: ...bbbb, c: ...cccc).
            "aws:ec2/getSubnets:getSubnets": {
                "ids": [f"subnet-0{zone[-1] * 16}" for zone in filters.get("availability-zone", [])]
            },
            "aws:ec2/getSubnet:getSubnet": {
                "id": args.args.get("id"),
                "vpcId": "vpc-0000000000000def0",
                "availabilityZone": self.subnet_zone,
            },
            "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {
                "locations": list(self.type_zones),
                "locationTypes": ["availability-zone"] * len(self.type_zones),
                "instanceTypes": [filters.get("instance-type", [""])[0]] * len(self.type_zones),
            },
            "aws:ec2/getVpcEndpointService:getVpcEndpointService": {
                "availabilityZones": list(endpoint_zones.get(str(args.args.get("service")), ())),
                "serviceName": f"com.amazonaws.{REGION}.{args.args.get('service')}",
                "id": str(args.args.get("service")),
            },
            "aws:ec2/getRouteTables:getRouteTables": {"ids": ["rtb-0123456789abcdef0"] if own_table else []},
            "aws:ec2/getRouteTable:getRouteTable": {
                "id": args.args.get("routeTableId"),
                "routeTableId": args.args.get("routeTableId"),
                "vpcId": "vpc-0000000000000def0",
                "routes": routes,
            },
        }
        return answers[args.token]


@dataclass
class Deployment:
    """What the mocked `pulumi up` declared, and the stack's exports, resolved."""

    mocks: RecordingMocks
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Recorded]:
        return [resource for resource in self.mocks.resources if resource.typ == typ]

    def one(self, typ: str) -> Recorded:
        (only,) = self.of_type(typ)
        return only

    def named(self, name: str) -> Recorded:
        (only,) = [resource for resource in self.mocks.resources if resource.name == name]
        return only

    def policies(self) -> list[tuple[str, dict[str, Any]]]:
        """Every IAM, key, topic and bucket policy document declared, with the resource's name."""
        found = []
        for resource in self.mocks.resources:
            for key in ("policy", "assumeRolePolicy"):
                if isinstance(resource.inputs.get(key), str):
                    found.append((f"{resource.name}.{key}", json.loads(resource.inputs[key])))
        return found


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "alert_emails": ("oncall@example.com", "lead@example.com"),
        "ssh_allowed_cidrs": ("203.0.113.0/24", "2001:db8::/48"),
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc2yqvUGjCG9Jt2k7Ic1aRzOWkDt9CVtGPpZS2lbE2C me@laptop",
    }
    return Settings(**(base | overrides))


def build(stack_settings: Settings | None = None, **mock_options: Any) -> Deployment:
    """Build TrainingStack under mocks; returns every resource it declared, with resolved inputs."""
    from infra.stack import TrainingStack

    mocks = RecordingMocks(**mock_options)
    pulumi.runtime.set_mocks(mocks, project="trainguard", stack="test", preview=False)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[misc]
    def run() -> pulumi.Output[None]:
        def record(args: pulumi.ResourceTransformationArgs) -> None:
            mocks.options[args.name] = args.opts

        stack = TrainingStack(
            "trainguard", stack_settings or settings(), opts=pulumi.ResourceOptions(transformations=[record])
        )
        exports = {
            name: pulumi.Output.all(*value) if isinstance(value, list) else value
            for name, value in stack.exports().items()
        }
        return pulumi.Output.all(**exports).apply(outputs.update)

    run()
    return Deployment(mocks, outputs)


@pytest.fixture
def deploy() -> Callable[..., Deployment]:
    """Build TrainingStack under mocks (see build)."""
    return build


@pytest.fixture(scope="module")
def largest_plan() -> Deployment:
    """The plan at 20 instances, the most the settings allow (built once per module: it takes seconds)."""
    return build(settings(instance_count=20))


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Valid settings for a small stack; keyword arguments override fields."""
    return settings


@pytest.fixture
def recording_mocks() -> type[RecordingMocks]:
    return RecordingMocks
