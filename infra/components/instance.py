"""TrainingInstance: one GPU instance, its /data volume, its address, and an instance profile with exactly what it
needs.

By default each instance gets an Elastic IP, so its address survives a stop/start (the auto-reboot function's
escalation, or a person's): the public IPv4 charge is the same for an attached Elastic IP as for the automatic
public address. In a subnet without a route to an internet gateway there is no public address to keep, and the
instance is reached at its private one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.bundle import ASSOCIATION_TIMEOUT_S, fetch_and_apply
from infra.policies import (
    assume_role,
    boot_recorder,
    bundle_reader,
    guard_notifier,
    results_writer,
)
from infra.user_data import user_data

DATA_DEVICE = "/dev/sdf"


@dataclass(frozen=True)
class Placement:
    """Where and from what an instance is built (the stack's lookups, resolved once)."""

    ami_id: str
    subnet_id: str
    availability_zone: str
    security_group_id: pulumi.Input[str]
    key_name: pulumi.Input[str] | None
    region: str
    bundle_version: str
    bundle_upload: pulumi.Resource
    stack: str
    public: bool  # the subnet routes to an internet gateway: reached at a public address
    elastic_ip: bool  # keep that address across a stop/start


@dataclass(frozen=True)
class Links:
    """What every instance is wired to: the results bucket, the alert topic and its key, the partition."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    topic_arn: pulumi.Output[str]
    topic_key_arn: pulumi.Output[str]
    partition: str


@dataclass(frozen=True)
class Size:
    instance_type: str
    root_volume_gib: int
    data_volume_gib: int


class TrainingInstance(pulumi.ComponentResource):
    """One instance: its role, its data volume, the instance, the bundle's association and its permissions."""

    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]  # the Elastic IP's, or the automatic one ("" in a private subnet)
    private_ip: pulumi.Output[str]
    address: pulumi.Output[str]  # where SSH reaches it: the public address, or in a private subnet the private one
    data_volume_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        size: Size,
        placement: Placement,
        links: Links,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:compute:TrainingInstance", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        self._tags = {
            "Name": name,
            contract.MANAGED_TAG_KEY: contract.MANAGED_TAG_VALUE,
            contract.STACK_TAG_KEY: placement.stack,
        }

        role, profile = self._role(links.partition)
        data_volume = self._data_volume(placement, size.data_volume_gib)
        instance = self._instance(size, placement, links, profile, data_volume)
        aws.ec2.VolumeAttachment(
            f"{name}-data-attachment",
            device_name=DATA_DEVICE,
            volume_id=data_volume.id,
            instance_id=instance.id,
            stop_instance_before_detaching=True,
            opts=self._child,
        )
        self._bundle_association(instance, placement)
        self._permissions(role, instance, links)

        self.instance_id = instance.id
        self.public_ip = instance.public_ip
        if placement.public and placement.elastic_ip:
            self.public_ip = aws.ec2.Eip(
                f"{name}-address", domain="vpc", instance=instance.id, tags=self._tags, opts=self._child
            ).public_ip
        self.private_ip = instance.private_ip
        self.address = self.public_ip if placement.public else self.private_ip
        self.data_volume_id = data_volume.id
        self.register_outputs(
            {
                "instance_id": instance.id,
                "public_ip": self.public_ip,
                "address": self.address,
                "data_volume_id": data_volume.id,
            }
        )

    def _role(self, partition: str) -> tuple[aws.iam.Role, aws.iam.InstanceProfile]:
        """The instance's role, with the CloudWatch agent's and SSM's managed policies."""
        name = self._name
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(assume_role("ec2.amazonaws.com")),
            description=f"trainguard instance {name}: CloudWatch agent, SSM, its own results prefix, the alert topic",
            tags=self._tags,
            opts=self._child,
        )
        for suffix, policy in (("agent", "CloudWatchAgentServerPolicy"), ("ssm", "AmazonSSMManagedInstanceCore")):
            aws.iam.RolePolicyAttachment(
                f"{name}-{suffix}",
                role=role.name,
                policy_arn=f"arn:{partition}:iam::aws:policy/{policy}",
                opts=self._child,
            )
        return role, aws.iam.InstanceProfile(f"{name}-profile", role=role.name, opts=self._child)

    def _data_volume(self, placement: Placement, size_gib: int) -> aws.ebs.Volume:
        """Not deleted with the instance, nor by `pulumi destroy`: it holds the results."""
        return aws.ebs.Volume(
            f"{self._name}-data",
            availability_zone=placement.availability_zone,
            size=size_gib,
            type="gp3",
            encrypted=True,
            tags={
                "Name": f"{self._name}-data",
                contract.MANAGED_TAG_KEY: contract.MANAGED_TAG_VALUE,
                contract.SNAPSHOT_TAG_KEY: contract.SNAPSHOT_TAG_VALUE,
            },
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )

    def _instance(
        self,
        size: Size,
        placement: Placement,
        links: Links,
        profile: aws.iam.InstanceProfile,
        data_volume: aws.ebs.Volume,
    ) -> aws.ec2.Instance:
        return aws.ec2.Instance(
            f"{self._name}-instance",
            ami=placement.ami_id,
            instance_type=size.instance_type,
            subnet_id=placement.subnet_id,
            vpc_security_group_ids=[placement.security_group_id],
            key_name=placement.key_name,
            iam_instance_profile=profile.name,
            # Basic monitoring: detailed 1-minute metrics are billed and no alarm needs them (infra.pricing).
            monitoring=False,
            # Hop limit 2: containers on the instance (Docker, NGC images) get the role's credentials too.
            metadata_options={"http_tokens": "required", "http_endpoint": "enabled", "http_put_response_hop_limit": 2},
            root_block_device={
                "volume_type": "gp3",
                "volume_size": size.root_volume_gib,
                "encrypted": True,
                "delete_on_termination": True,
                "tags": {"Name": f"{self._name}-root", contract.MANAGED_TAG_KEY: contract.MANAGED_TAG_VALUE},
            },
            user_data=pulumi.Output.all(links.bucket_name, data_volume.id, links.topic_arn).apply(
                lambda args: user_data(args[0], args[1], placement.region, placement.bundle_version, args[2])
            ),
            tags=self._tags,
            # A new AMI or new user data would replace, or stop and start, a running training instance: never.
            # New settings reach it as a bundle version (below); a new AMI only on purpose (README, Deploy).
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["ami", "userData"], depends_on=[placement.bundle_upload]
            ),
        )

    def _bundle_association(self, instance: aws.ec2.Instance, placement: Placement) -> None:
        """Applies each new bundle version to the running instance; its parameters name the version."""
        aws.ssm.Association(
            f"{self._name}-bundle-association",
            association_name=contract.bundle_association_name(self._name, placement.stack),
            name="AWS-RunShellScript",
            targets=[{"key": "InstanceIds", "values": [instance.id]}],
            # Sized to the worst case (infra.bundle): a run that State Manager cuts short is never retried.
            parameters={
                "commands": fetch_and_apply(placement.bundle_version),
                "executionTimeout": str(ASSOCIATION_TIMEOUT_S),
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[placement.bundle_upload]),
        )

    def _permissions(self, role: aws.iam.Role, instance: aws.ec2.Instance, links: Links) -> None:
        """Read the bundles, email through the topic (the guard), write the instance's own results prefix, and
        record its own boots in its boot tag."""
        name = self._name
        aws.iam.RolePolicy(
            f"{name}-bundle",
            role=role.id,
            policy=links.bucket_arn.apply(lambda arn: json.dumps(bundle_reader(arn, contract.BUNDLE_PREFIX))),
            opts=self._child,
        )
        aws.iam.RolePolicy(
            f"{name}-guard",
            role=role.id,
            policy=pulumi.Output.all(links.topic_arn, links.topic_key_arn).apply(
                lambda arns: json.dumps(guard_notifier(arns[0], arns[1]))
            ),
            opts=self._child,
        )
        # Scoped to the instance's own id, so the policy can only follow the instance.
        aws.iam.RolePolicy(
            f"{name}-results",
            role=role.id,
            policy=pulumi.Output.all(links.bucket_arn, instance.id).apply(
                lambda args: json.dumps(results_writer(args[0], args[1]))
            ),
            opts=self._child,
        )
        aws.iam.RolePolicy(
            f"{name}-boot",
            role=role.id,
            policy=instance.arn.apply(lambda arn: json.dumps(boot_recorder(arn))),
            opts=self._child,
        )
