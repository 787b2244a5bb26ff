"""SshAccess: the instances' security group, admitting SSH from the configured address blocks only."""

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
        ipv4 = [cidr for cidr in allowed_cidrs if ipaddress.ip_network(cidr).version == 4]
        ipv6 = [cidr for cidr in allowed_cidrs if ipaddress.ip_network(cidr).version == 6]
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="trainguard: SSH from the allowed address blocks only",
            vpc_id=vpc_id,
            ingress=[
                {
                    "description": "SSH",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr_blocks": ipv4,
                    "ipv6_cidr_blocks": ipv6,
                }
            ],
            egress=[
                {
                    "description": "updates, S3, CloudWatch, SSM",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "ipv6_cidr_blocks": ["::/0"],
                }
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.security_group_id = group.id
        self.register_outputs({"security_group_id": group.id})
