"""TrainingStack: the whole deployment, wired from its components; __main__ only builds it and exports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.alarm_specs import instance_alarms
from infra.components.alarms import InstanceAlarms
from infra.components.alerts import AlertTopic
from infra.components.auto_reboot import AutoReboot
from infra.components.bundle import InstanceBundle
from infra.components.canary import SshCanary
from infra.components.dashboard import StackDashboard
from infra.components.instance import Links, Placement, Size, TrainingInstance
from infra.components.network import SshAccess
from infra.components.results import ResultsBucket
from infra.components.snapshots import SnapshotPolicy
from infra.detection import detection_budget
from infra.pricing import monitoring_cost_usd_month
from infra.settings import Settings

# The Deep Learning AMI's login user (Ubuntu).
LOGIN_USER = "ubuntu"
# The current AWS Deep Learning AMI (NVIDIA driver, Ubuntu 22.04), per architecture.
DLAMI_NAMES = {
    "x86_64": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
    "arm64": "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
}


def choose_subnet(candidates: list[str]) -> str:
    """The default subnet to use: the first, in id order, so that a redeploy picks the same one."""
    if not candidates:
        raise ValueError(
            "no default subnet in an availability zone that offers this instance type: "
            "set trainguard:subnetId, or choose another trainguard:instanceType"
        )
    return sorted(candidates)[0]


@dataclass(frozen=True)
class Account:
    """Where the stack is deployed, looked up once: the account, partition and region."""

    account_id: str
    partition: str
    region: str

    @classmethod
    def look_up(cls) -> Account:
        return cls(aws.get_caller_identity().account_id, aws.get_partition().partition, aws.get_region().region)


class TrainingStack(pulumi.ComponentResource):
    """The alert topic and results bucket, the remediation, the instances with their alarms, the canary."""

    instance_ids: list[pulumi.Output[str]]
    public_ips: list[pulumi.Output[str]]
    bucket_name: pulumi.Output[str]
    topic_arn: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    detection_budget_seconds: dict[str, int]
    monitoring_cost_usd_month: float

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainguard:index:TrainingStack", name, None, opts)
        self._name, self._settings = name, settings
        self._child = pulumi.ResourceOptions(parent=self)
        self._account = Account.look_up()
        self._instance_type = aws.ec2.get_instance_type(instance_type=settings.instance_type)
        # Every instance alarm's name starts with this, so one permission covers them all.
        self._alarm_prefix = contract.stack_alarm_prefix(pulumi.get_stack())

        alerts = AlertTopic(
            f"{name}-alerts",
            emails=settings.alert_emails,
            account_id=self._account.account_id,
            partition=self._account.partition,
            opts=self._child,
        )
        results = ResultsBucket(f"{name}-results", opts=self._child)
        recovery = self._remediation(alerts, results)
        subnet = aws.ec2.get_subnet(id=settings.subnet_id or self._default_subnet(settings.instance_type))
        ssh = SshAccess(f"{name}-ssh", vpc_id=subnet.vpc_id, allowed_cidrs=settings.ssh_allowed_cidrs, opts=self._child)
        nodes = self._instances(subnet, ssh, alerts, results, recovery)
        self._canary(subnet, ssh, nodes, alerts)
        dashboard = StackDashboard(
            f"{name}-dashboard",
            instance_ids=[node.instance_id for node in nodes],
            region=self._account.region,
            opts=self._child,
        )

        self.instance_ids = [node.instance_id for node in nodes]
        self.public_ips = [node.public_ip for node in nodes]
        self.bucket_name = results.bucket_name
        self.topic_arn = alerts.topic_arn
        self.dashboard_url = dashboard.url
        self.detection_budget_seconds = detection_budget(settings.detection)
        gpus = sum(int(gpu.count) for gpu in self._instance_type.gpuses or [])
        self.monitoring_cost_usd_month = monitoring_cost_usd_month(settings.instance_count, gpus, settings.detection)
        self.register_outputs(
            {
                "instance_ids": self.instance_ids,
                "public_ips": self.public_ips,
                "bucket_name": self.bucket_name,
                "topic_arn": self.topic_arn,
                "dashboard_url": self.dashboard_url,
            }
        )

    def _remediation(self, alerts: AlertTopic, results: ResultsBucket) -> AutoReboot:
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
            opts=self._child,
        )
        SnapshotPolicy(
            f"{self._name}-snapshots",
            interval_hours=settings.snapshot_interval_hours,
            retain_count=settings.snapshot_retain_count,
            region=account.region,
            partition=account.partition,
            opts=self._child,
        )
        return recovery

    def _instances(
        self,
        subnet: aws.ec2.GetSubnetResult,
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
        bundle = InstanceBundle(f"{name}-bundle", bucket_name=results.bucket_name, opts=self._child)
        placement = Placement(
            ami_id=settings.ami_id or self._deep_learning_ami(self._instance_type.supported_architectures),
            subnet_id=subnet.id,
            availability_zone=subnet.availability_zone,
            security_group_id=ssh.security_group_id,
            key_name=key_name,
            region=account.region,
            bundle_version=bundle.version,
            bundle_upload=bundle.upload,
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
                stack=pulumi.get_stack(),
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
    ) -> None:
        """The SSH canary inside the instances' VPC, which samples each one's sshd."""
        SshCanary(
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
        """What `pulumi stack output` shows a person: ids, addresses, the commands to run, where things are."""
        return {
            "instance_ids": self.instance_ids,
            "public_ips": self.public_ips,
            "ssh_commands": [ip.apply(lambda address: f"ssh {LOGIN_USER}@{address}") for ip in self.public_ips],
            "probe_commands": [
                iid.apply(lambda instance_id: f"python -m healthcheck probe {instance_id}") for iid in self.instance_ids
            ],
            "bucket_name": self.bucket_name,
            "topic_arn": self.topic_arn,
            "dashboard_url": self.dashboard_url,
            "detection_budget_seconds": self.detection_budget_seconds,
            "monitoring_cost_usd_month": self.monitoring_cost_usd_month,
        }

    @staticmethod
    def _default_subnet(instance_type: str) -> str:
        """A default-VPC subnet in a zone that offers the instance type (not every zone has GPUs)."""
        offered = aws.ec2.get_instance_type_offerings(
            location_type="availability-zone", filters=[{"name": "instance-type", "values": [instance_type]}]
        ).locations
        vpc = aws.ec2.get_vpc(default=True)
        subnets = aws.ec2.get_subnets(
            filters=[
                {"name": "vpc-id", "values": [vpc.id]},
                {"name": "default-for-az", "values": ["true"]},
                {"name": "availability-zone", "values": list(offered)},
            ]
        )
        return choose_subnet(list(subnets.ids))

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
