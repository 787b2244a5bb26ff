"""AutoReboot: the Lambda that recovers hung instances, its least-privilege role, logs, retries and triggers.

Alarms invoke it directly (InstanceAlarms grants each one permission); EC2's
"stopped" events reach it through EventBridge, so an instance it stopped for a
stop/start is started again without waiting inside the 60-second function.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.lambda_package import ARCHITECTURE, AUTO_REBOOT_HANDLER, RUNTIME, package_files
from infra.policies import MANAGED_TAG_KEY, assume_role, auto_reboot

TIMEOUT_S = 60
MEMORY_MB = 256
LOG_RETENTION_DAYS = 30
RETRIES = 2
MAX_EVENT_AGE_S = 900  # an alarm older than 15 minutes has been superseded by newer ones


class AutoReboot(pulumi.ComponentResource):
    function_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        topic_arn: pulumi.Output[str],
        topic_key_arn: pulumi.Output[str],
        bucket_name: pulumi.Output[str],
        bucket_arn: pulumi.Output[str],
        region: str,
        partition: str,
        account_id: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:remediation:AutoReboot", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        logs = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=LOG_RETENTION_DAYS, opts=child)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(assume_role("lambda.amazonaws.com")),
            description="trainguard auto-reboot: recover managed instances, keep evidence, tell a person",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=pulumi.Output.all(bucket_arn, topic_arn, topic_key_arn, logs.arn).apply(
                lambda arns: json.dumps(
                    auto_reboot(
                        partition=partition,
                        region=region,
                        account_id=account_id,
                        bucket_arn=arns[0],
                        topic_arn=arns[1],
                        key_arn=arns[2],
                        log_group_arn=arns[3],
                    )
                )
            ),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            description="trainguard: snapshot, keep the console, reboot once, never loop, email a person",
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=AUTO_REBOOT_HANDLER,
            timeout=TIMEOUT_S,
            memory_size=MEMORY_MB,
            role=role.arn,
            code=pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in package_files().items()}),
            environment={
                "variables": {
                    "TRAINGUARD_TOPIC_ARN": topic_arn,
                    "TRAINGUARD_BUCKET": bucket_name,
                    "TRAINGUARD_MANAGED_TAG": f"{MANAGED_TAG_KEY}=true",
                    "TRAINGUARD_MAX_REBOOTS": "3",
                    "TRAINGUARD_REBOOT_WINDOW_HOURS": "6",
                    "TRAINGUARD_BOOT_GRACE_SECONDS": "600",
                }
            },
            logging_config={"log_format": "Text", "log_group": logs.name},
            opts=child,
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke-config",
            function_name=function.name,
            maximum_retry_attempts=RETRIES,
            maximum_event_age_in_seconds=MAX_EVENT_AGE_S,
            destination_config={"on_failure": {"destination": topic_arn}},
            opts=child,
        )

        stopped = aws.cloudwatch.EventRule(
            f"{name}-stopped",
            description="trainguard: EC2 instances that stopped, so a stop/start can finish",
            event_pattern=json.dumps(
                {
                    "source": ["aws.ec2"],
                    "detail-type": ["EC2 Instance State-change Notification"],
                    "detail": {"state": ["stopped"]},
                }
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(f"{name}-stopped-target", rule=stopped.name, arn=function.arn, opts=child)
        aws.lambda_.Permission(
            f"{name}-stopped-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=stopped.arn,
            opts=child,
        )

        self.function_arn = function.arn
        self.register_outputs({"function_arn": function.arn, "log_group": logs.name})
