"""SnapshotPolicy: DLM snapshots of every data volume tagged for it, with a least-privilege execution role."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.policies import assume_role, snapshot_lifecycle


class SnapshotPolicy(pulumi.ComponentResource):
    policy_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        interval_hours: int,
        retain_count: int,
        region: str,
        partition: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:snapshots:SnapshotPolicy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(assume_role("dlm.amazonaws.com")),
            description="trainguard: DLM snapshots of tagged data volumes",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-role-policy", role=role.id, policy=json.dumps(snapshot_lifecycle(partition, region)), opts=child
        )
        policy = aws.dlm.LifecyclePolicy(
            f"{name}-policy",
            # DLM accepts only [0-9A-Za-z _-] here (infra.aws_rules).
            description=f"trainguard snapshots data volumes every {interval_hours} h and keeps {retain_count}",
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details={
                "resource_types": ["VOLUME"],
                "target_tags": {contract.SNAPSHOT_TAG_KEY: contract.SNAPSHOT_TAG_VALUE},
                "schedules": [
                    {
                        "name": f"every-{interval_hours}h",
                        "create_rule": {"interval": interval_hours, "interval_unit": "HOURS", "times": "00:00"},
                        "retain_rule": {"count": retain_count},
                        "copy_tags": True,
                        "tags_to_add": {
                            contract.MANAGED_TAG_KEY: contract.MANAGED_TAG_VALUE,
                            contract.SNAPSHOT_SOURCE_TAG_KEY: "dlm",
                        },
                    }
                ],
            },
            opts=child,
        )
        self.policy_id = policy.id
        self.register_outputs({"policy_id": policy.id})
