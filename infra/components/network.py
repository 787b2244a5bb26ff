"""SshAccess: the instances' security group, admitting SSH from the configured address blocks only.

Rules are separate resources (never inline), so the SSH canary can add its own
rule to this group without the two fighting over it.
"""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws


class SshAccess(pulumi.ComponentResource):
    security_group_id: pulumi.Output[str]

    def __init__(
        self, name: str, *, vpc_id: str, allowed_cidrs: tuple[str, ...], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("trainguard:network:SshAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        group = aws.ec2.SecurityGroup(
            f"{name}-sg", description="trainguard: SSH from the allowed address blocks only", vpc_id=vpc_id, opts=child
        )
        for index, cidr in enumerate(allowed_cidrs):
            version = ipaddress.ip_network(cidr).version
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-ssh-{index}",
                security_group_id=group.id,
                description="SSH",
                ip_protocol="tcp",
                from_port=22,
                to_port=22,
                cidr_ipv4=cidr if version == 4 else None,
                cidr_ipv6=cidr if version == 6 else None,
                opts=child,
            )
        for family, cidr in (("ipv4", "0.0.0.0/0"), ("ipv6", "::/0")):
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress-{family}",
                security_group_id=group.id,
                description="updates, S3, CloudWatch, SSM",
                ip_protocol="-1",
                cidr_ipv4=cidr if family == "ipv4" else None,
                cidr_ipv6=cidr if family == "ipv6" else None,
                opts=child,
            )
        self.security_group_id = group.id
        self.register_outputs({"security_group_id": group.id})
