"""TrainingStack: the whole deployment, wired from its components; __main__ only builds it and exports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.alarm_specs import ALARM_TYPE, instance_alarms
from infra.aws_rules import RULES
from infra.components.alarms import InstanceAlarms
from infra.components.alerts import AlertTopic
from infra.components.auto_reboot import AutoReboot
from infra.components.bundle import InstanceBundle
from infra.components.canary import SshCanary, errors_alarm_name
from infra.components.dashboard import StackDashboard, dashboard_name
from infra.components.instance import Links, Placement, Size, TrainingInstance
from infra.components.network import SshAccess
from infra.components.results import ResultsBucket
from infra.components.snapshots import SnapshotPolicy
from infra.detection import detection_budget
from infra.pricing import Fleet, cost_items, cost_usd_month, monitoring_cost_usd_month
from infra.settings import Settings

# The Deep Learning AMI's login user (Ubuntu).
LOGIN_USER = "ubuntu"
# The current AWS Deep Learning AMI (NVIDIA driver, Ubuntu 22.04), per architecture.
DLAMI_NAMES = {
    "x86_64": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
    "arm64": "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
}
# Besides the instances, the subnet holds the canary (a Lambda function in the VPC) and the CloudWatch interface
# endpoint it publishes through; neither is offered in every zone ("does not support the availability zone of the
# subnet"). The endpoint services list their zones; AWS publishes no list for VPC functions, so the Lambda
# service's own endpoint stands for it (the zone VPC functions miss, use1-az3, misses it too).
ZONE_SERVICES = {"the CloudWatch interface endpoint": "monitoring", "Lambda in a VPC": "lambda"}
# The longest instance alarm name a stack makes (its key), and an instance id at its longest.
LONGEST_ALARM_KEY = max(
    (contract.SSH_ALARM_KEY, contract.HEARTBEAT_ALARM_KEY, "memory-pressure", "instance-status", "system-status"),
    key=len,
)
LONGEST_INSTANCE_ID = "i-" + "f" * 17


class PlacementError(ValueError):
    """Where the stack would put the instances cannot work; the message says why and what to do, on one line."""


def derived_names(stack: str) -> list[tuple[str, str, str]]:
    """(resource type, input, value) for every name the stack builds from its own name (pure)."""
    return [
        ("aws:cloudwatch/dashboard:Dashboard", "dashboardName", dashboard_name(stack)),
        (ALARM_TYPE, "name", contract.instance_alarm_name(stack, LONGEST_INSTANCE_ID, LONGEST_ALARM_KEY)),
        (ALARM_TYPE, "name", errors_alarm_name(stack)),
        (
            "aws:ssm/association:Association",
            "associationName",
            contract.bundle_association_name("trainguard-node-19", stack),
        ),
    ]


def stack_name_problem(stack: str) -> str | None:
    """One line saying why AWS would refuse a name the stack makes from `stack`, or None (pure)."""
    for typ, key, value in derived_names(stack):
        problem = RULES[(typ, key)].problem(value)
        if problem is not None:
            return (
                f"the stack name {stack!r} cannot be used: trainguard names its {typ.rsplit(':', 1)[-1]} {value!r}, "
                f"which AWS refuses ({problem}). Use a stack of letters, digits, '-' and '_' "
                f"(pulumi stack rename {stack.replace('.', '-')[:40]})"
            )
    return None


def usable_zones(offered: Sequence[str], service_zones: Mapping[str, Sequence[str]]) -> list[str]:
    """The zones that offer the instance type and every service the subnet must hold (pure, sorted)."""
    usable = set(offered)
    for zones in service_zones.values():
        usable &= set(zones)
    return sorted(usable)


def zone_problem(instance_type: str, offered: Sequence[str], service_zones: Mapping[str, Sequence[str]]) -> str:
    """Which zones offer what, for a message that says where a subnet must be (pure)."""
    parts = [f"{instance_type} in {', '.join(sorted(offered)) or 'none'}"]
    parts += [f"{what} in {', '.join(sorted(zones)) or 'none'}" for what, zones in service_zones.items()]
    return "; ".join(parts)


def choose_subnet(
    candidates: list[str], instance_type: str, offered: Sequence[str], service_zones: Mapping[str, Sequence[str]]
) -> str:
    """The default subnet to use: the first, in id order, so that a redeploy picks the same one."""
    if not candidates:
        raise PlacementError(
            f"no default-VPC subnet is in a zone that offers everything the stack needs "
            f"({zone_problem(instance_type, offered, service_zones)}): set trainguard:subnetId to a subnet in a "
            "zone common to all, or choose another trainguard:instanceType"
        )
    return sorted(candidates)[0]


def default_route(routes: Sequence[Any]) -> str | None:
    """Where a route table sends traffic for the internet: "internet" (a gateway), "nat", or None (pure).

    Anything else (a transit gateway, a peering, an appliance, no default route at all) may or may not reach
    AWS's public endpoints; only the person who built the VPC knows.
    """
    for route in routes:
        if route.cidr_block == "0.0.0.0/0":
            if (route.gateway_id or "").startswith("igw-"):
                return "internet"
            if route.nat_gateway_id:
                return "nat"
    return None


@dataclass(frozen=True)
class Account:
    """Where the stack is deployed, looked up once: the account, partition and region."""

    account_id: str
    partition: str
    region: str

    @classmethod
    def look_up(cls) -> Account:
        return cls(aws.get_caller_identity().account_id, aws.get_partition().partition, aws.get_region().region)


@dataclass(frozen=True)
class Site:
    """The subnet the stack uses, and how it reaches the internet."""

    subnet: aws.ec2.GetSubnetResult
    public: bool  # routes to an internet gateway: the instances have public addresses


class TrainingStack(pulumi.ComponentResource):
    """The alert topic and results bucket, the remediation, the instances with their alarms, the canary."""

    instance_ids: list[pulumi.Output[str]]
    public_ips: list[pulumi.Output[str]]
    addresses: list[pulumi.Output[str]]
    bucket_name: pulumi.Output[str]
    topic_arn: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    detection_budget_seconds: dict[str, int]
    fleet: Fleet
    _bundle: InstanceBundle

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainguard:index:TrainingStack", name, None, opts)
        self._name, self._settings = name, settings
        self._stack = pulumi.get_stack()
        self._child = pulumi.ResourceOptions(parent=self)
        self._account = Account.look_up()
        self._instance_type = aws.ec2.get_instance_type(instance_type=settings.instance_type)
        # Every instance alarm's name starts with this, so one permission covers them all.
        self._alarm_prefix = contract.stack_alarm_prefix(self._stack)
        site = self._site()

        alerts = AlertTopic(
            f"{name}-alerts",
            emails=settings.alert_emails,
            account_id=self._account.account_id,
            partition=self._account.partition,
            opts=self._child,
        )
        results = ResultsBucket(f"{name}-results", evidence_retain_days=settings.evidence_retain_days, opts=self._child)
        recovery, snapshots = self._remediation(alerts, results)
        ssh = SshAccess(
            f"{name}-ssh", vpc_id=site.subnet.vpc_id, allowed_cidrs=settings.ssh_allowed_cidrs, opts=self._child
        )
        nodes = self._instances(site, ssh, alerts, results, recovery)
        recovery.forget_claims_of([node.instance_id for node in nodes])
        canary = self._canary(site.subnet, ssh, nodes, alerts)
        dashboard = StackDashboard(
            f"{name}-dashboard",
            instance_ids=[node.instance_id for node in nodes],
            region=self._account.region,
            opts=self._child,
        )

        self.instance_ids = [node.instance_id for node in nodes]
        self.public_ips = [node.public_ip for node in nodes]
        self.addresses = [node.address for node in nodes]
        self.bucket_name = results.bucket_name
        self.topic_arn = alerts.topic_arn
        self.dashboard_url = dashboard.url
        self.detection_budget_seconds = detection_budget(settings.detection)
        self.fleet = Fleet(
            instances=settings.instance_count,
            gpus_per_instance=sum(int(gpu.count) for gpu in self._instance_type.gpuses or []),
            detection=settings.detection,
            root_volume_gib=settings.root_volume_gib,
            data_volume_gib=settings.data_volume_gib,
            evidence_retain_days=settings.evidence_retain_days,
        )
        self._functions = (recovery.function_name, canary.function_name)
        self._dlm_policy_id = snapshots.policy_id
        self._bundle_version = self._bundle.version
        self.register_outputs(
            {
                "instance_ids": self.instance_ids,
                "public_ips": self.public_ips,
                "bucket_name": self.bucket_name,
                "topic_arn": self.topic_arn,
                "dashboard_url": self.dashboard_url,
            }
        )

    def _site(self) -> Site:
        """The configured subnet, checked; or a default-VPC subnet in a zone that has everything."""
        settings = self._settings
        offered = list(
            aws.ec2.get_instance_type_offerings(
                location_type="availability-zone",
                filters=[{"name": "instance-type", "values": [settings.instance_type]}],
            ).locations
        )
        service_zones = {
            what: list(aws.ec2.get_vpc_endpoint_service(service=service, service_type="Interface").availability_zones)
            for what, service in ZONE_SERVICES.items()
        }
        usable = usable_zones(offered, service_zones)
        if settings.subnet_id is None:
            return Site(aws.ec2.get_subnet(id=self._default_subnet(usable, offered, service_zones)), public=True)
        subnet = aws.ec2.get_subnet(id=settings.subnet_id)
        if subnet.availability_zone not in usable:
            raise PlacementError(
                f"trainguard:subnetId {subnet.id} is in {subnet.availability_zone}, which lacks something the stack "
                f"needs ({zone_problem(settings.instance_type, offered, service_zones)}): choose a subnet in "
                f"{', '.join(usable) or 'another region'}, or unset subnetId"
            )
        route = default_route(self._route_table(subnet).routes)
        if route is None and not settings.subnet_reaches_aws:
            raise PlacementError(
                f"trainguard:subnetId {subnet.id} has no route to an internet or NAT gateway, so the instances could "
                "not fetch their bundle, install the CloudWatch agent or send metrics and emails (and the heartbeat "
                "alarm would reboot healthy hosts): choose a subnet that has one, or, if the VPC reaches S3, "
                "CloudWatch, SSM and SNS another way (VPC endpoints, a transit gateway, a proxy), "
                "pulumi config set trainguard:subnetReachesAws true"
            )
        return Site(subnet, public=route == "internet")

    @staticmethod
    def _route_table(subnet: aws.ec2.GetSubnetResult) -> aws.ec2.GetRouteTableResult:
        """The subnet's own route table, else its VPC's main one (a subnet without its own uses that)."""
        own = aws.ec2.get_route_tables(filters=[{"name": "association.subnet-id", "values": [subnet.id]}]).ids
        if own:
            return aws.ec2.get_route_table(route_table_id=own[0])
        main = aws.ec2.get_route_tables(
            filters=[{"name": "vpc-id", "values": [subnet.vpc_id]}, {"name": "association.main", "values": ["true"]}]
        ).ids
        return aws.ec2.get_route_table(route_table_id=main[0])

    def _remediation(self, alerts: AlertTopic, results: ResultsBucket) -> tuple[AutoReboot, SnapshotPolicy]:
        """The auto-reboot function, and the DLM snapshots of the data volumes."""
        account, settings = self._account, self._settings
        recovery = AutoReboot(
            f"{self._name}-auto-reboot",
            topic_arn=alerts.topic_arn,
            topic_key_arn=alerts.key_arn,
            bucket_name=results.bucket_name,
            bucket_arn=results.bucket_arn,
            region=account.region,
            partition=account.partition,
            account_id=account.account_id,
            alarm_name_prefix=self._alarm_prefix,
            evidence_retain_days=settings.evidence_retain_days,
            opts=self._child,
        )
        snapshots = SnapshotPolicy(
            f"{self._name}-snapshots",
            interval_hours=settings.snapshot_interval_hours,
            retain_count=settings.snapshot_retain_count,
            region=account.region,
            partition=account.partition,
            opts=self._child,
        )
        return recovery, snapshots

    def _instances(
        self,
        site: Site,
        ssh: SshAccess,
        alerts: AlertTopic,
        results: ResultsBucket,
        recovery: AutoReboot,
    ) -> list[TrainingInstance]:
        """The instances, each with its alarms, in one subnet behind the SSH security group."""
        name, settings, account = self._name, self._settings, self._account
        key_name: pulumi.Input[str] | None = settings.key_name
        if settings.ssh_public_key is not None:
            key_name = aws.ec2.KeyPair(f"{name}-key", public_key=settings.ssh_public_key, opts=self._child).key_name
        self._bundle = InstanceBundle(f"{name}-bundle", bucket_name=results.bucket_name, opts=self._child)
        placement = Placement(
            ami_id=settings.ami_id or self._deep_learning_ami(self._instance_type.supported_architectures),
            subnet_id=site.subnet.id,
            availability_zone=site.subnet.availability_zone,
            security_group_id=ssh.security_group_id,
            key_name=key_name,
            region=account.region,
            bundle_version=self._bundle.version,
            bundle_upload=self._bundle.upload,
            stack=self._stack,
            public=site.public,
            elastic_ip=settings.elastic_ips,
        )
        specs = instance_alarms(settings, can_recover=bool(self._instance_type.auto_recovery_supported))
        size = Size(settings.instance_type, settings.root_volume_gib, settings.data_volume_gib)
        links = Links(results.bucket_name, results.bucket_arn, alerts.topic_arn, alerts.key_arn, account.partition)
        nodes = []
        for index in range(settings.instance_count):
            node = TrainingInstance(
                f"{name}-node-{index}", size=size, placement=placement, links=links, opts=self._child
            )
            InstanceAlarms(
                f"{name}-node-{index}-alarms",
                instance_id=node.instance_id,
                stack=self._stack,
                specs=specs,
                topic_arn=alerts.topic_arn,
                bucket_name=results.bucket_name,
                region=account.region,
                partition=account.partition,
                auto_reboot_arn=recovery.function_arn,
                opts=self._child,
            )
            nodes.append(node)
        return nodes

    def _canary(
        self, subnet: aws.ec2.GetSubnetResult, ssh: SshAccess, nodes: list[TrainingInstance], alerts: AlertTopic
    ) -> SshCanary:
        """The SSH canary inside the instances' VPC, which samples each one's sshd."""
        return SshCanary(
            f"{self._name}-canary",
            vpc_id=subnet.vpc_id,
            subnet_id=subnet.id,
            instance_security_group_id=ssh.security_group_id,
            targets=[(node.instance_id, node.private_ip) for node in nodes],
            detection=self._settings.detection,
            topic_arn=alerts.topic_arn,
            region=self._account.region,
            partition=self._account.partition,
            account_id=self._account.account_id,
            opts=self._child,
        )

    def exports(self) -> dict[str, pulumi.Input[Any]]:
        """What `pulumi stack output` shows a person, and what `trainguard status` reads to find the stack's pieces:
        ids, addresses, the commands to run (each naming the region), where things are, what it costs."""
        region, stack = self._account.region, self._stack
        indexed = list(enumerate(zip(self.instance_ids, self.addresses, strict=True)))
        return {
            "instance_ids": self.instance_ids,
            "public_ips": self.public_ips,
            "ssh_commands": [address.apply(lambda ip: f"ssh {LOGIN_USER}@{ip}") for address in self.addresses],
            "ssh_config": pulumi.Output.all(*(pulumi.Output.all(iid, address) for _, (iid, address) in indexed)).apply(
                lambda pairs: ssh_config(stack, region, [(str(p[0]), str(p[1])) for p in pairs])
            ),
            "probe_commands": [
                iid.apply(lambda instance_id: f"trainguard probe {instance_id} --region {region}")
                for iid in self.instance_ids
            ],
            "bucket_name": self.bucket_name,
            "topic_arn": self.topic_arn,
            "dashboard_url": self.dashboard_url,
            "detection_budget_seconds": self.detection_budget_seconds,
            "monitoring_cost_usd_month": monitoring_cost_usd_month(self.fleet),
            "cost_usd_month": cost_usd_month(self.fleet),
            "cost_items_usd_month": {item: round(usd, 2) for item, usd in cost_items(self.fleet).items()},
            "region": region,
            "stack": stack,
            "bundle_version": self._bundle_version,
            "auto_reboot_function_name": self._functions[0],
            "canary_function_name": self._functions[1],
            "dlm_policy_id": self._dlm_policy_id,
        }

    def _default_subnet(
        self, usable: list[str], offered: Sequence[str], service_zones: Mapping[str, Sequence[str]]
    ) -> str:
        """A default-VPC subnet in a zone that offers the instance type and the services the subnet holds."""
        vpc = aws.ec2.get_vpc(default=True)
        subnets = (
            aws.ec2.get_subnets(
                filters=[
                    {"name": "vpc-id", "values": [vpc.id]},
                    {"name": "default-for-az", "values": ["true"]},
                    {"name": "availability-zone", "values": usable},
                ]
            ).ids
            if usable
            else []
        )
        return choose_subnet(list(subnets), self._settings.instance_type, offered, service_zones)

    @staticmethod
    def _deep_learning_ami(architectures: Sequence[str]) -> str:
        architecture = "arm64" if "arm64" in architectures and "x86_64" not in architectures else "x86_64"
        return aws.ec2.get_ami(
            most_recent=True,
            owners=["amazon"],
            filters=[
                {"name": "name", "values": [DLAMI_NAMES[architecture]]},
                {"name": "architecture", "values": [architecture]},
                {"name": "state", "values": ["available"]},
            ],
        ).id


def ssh_config(stack: str, region: str, instances: list[tuple[str, str]]) -> str:
    """An ~/.ssh/config snippet: one Host per instance, trainguard-<stack>-<index> (pure)."""
    blocks = [
        f"Host {contract.ALARM_NAME_PREFIX}{stack}-{index}\n"
        f"    HostName {address}\n"
        f"    User {LOGIN_USER}\n"
        f"    # {instance_id} in {region}: trainguard probe {instance_id} --region {region}\n"
        for index, (instance_id, address) in enumerate(instances)
    ]
    return "\n".join(blocks)
