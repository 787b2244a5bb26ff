"""SshCanary: a Lambda inside the instances' VPC that samples every managed sshd's banner, every few seconds.

It has its own security group, which the instances' group admits on port 22,
and reaches CloudWatch and EC2 through interface endpoints (a function in a
VPC has no route to the public API endpoints). If the canary itself fails, an
alarm on its Errors emails a person: a broken canary is never a reason to
reboot anything.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.components.packaged_function import PackagedFunction
from infra.detection import Detection
from infra.policies import MANAGED_TAG_KEY, ssh_canary

HANDLER = "healthcheck.lambdas.ssh_canary.handler"
TIMEOUT_S = 60
MEMORY_MB = 128
LOG_RETENTION_DAYS = 14
ENDPOINT_SERVICES = ("monitoring", "ec2")


class SshCanary(pulumi.ComponentResource):
    function_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        vpc_id: str,
        subnet_id: str,
        instance_security_group_id: pulumi.Output[str],
        detection: Detection,
        topic_arn: pulumi.Output[str],
        region: str,
        partition: str,
        account_id: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:monitoring:SshCanary", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        canary_group = aws.ec2.SecurityGroup(
            f"{name}-sg", description="trainguard SSH canary", vpc_id=vpc_id, opts=child
        )
        endpoint_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints-sg",
            description="trainguard canary's CloudWatch and EC2 endpoints",
            vpc_id=vpc_id,
            opts=child,
        )
        for rule, (group, peer, port) in {
            "to-ssh": (canary_group.id, instance_security_group_id, 22),
            "to-endpoints": (canary_group.id, endpoint_group.id, 443),
        }.items():
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{rule}",
                security_group_id=group,
                referenced_security_group_id=peer,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                opts=child,
            )
        for rule, (group, port) in {
            "ssh-from-canary": (instance_security_group_id, 22),
            "endpoints-from-canary": (endpoint_group.id, 443),
        }.items():
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-{rule}",
                security_group_id=group,
                referenced_security_group_id=canary_group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                opts=child,
            )
        for service in ENDPOINT_SERVICES:
            aws.ec2.VpcEndpoint(
                f"{name}-{service}-endpoint",
                vpc_id=vpc_id,
                service_name=f"com.amazonaws.{region}.{service}",
                vpc_endpoint_type="Interface",
                subnet_ids=[subnet_id],
                security_group_ids=[endpoint_group.id],
                private_dns_enabled=True,
                opts=child,
            )

        function = PackagedFunction(
            name,
            handler=HANDLER,
            description="trainguard: sample every managed instance's SSH banner and publish it",
            timeout_s=TIMEOUT_S,
            memory_mb=MEMORY_MB,
            log_retention_days=LOG_RETENTION_DAYS,
            policy=lambda log_group_arn: log_group_arn.apply(
                lambda arn: json.dumps(
                    ssh_canary(partition=partition, region=region, account_id=account_id, log_group_arn=arn)
                )
            ),
            environment={
                "TRAINGUARD_CANARY_INTERVAL_SECONDS": str(detection.canary_interval_s),
                "TRAINGUARD_MANAGED_TAG": f"{MANAGED_TAG_KEY}=true",
            },
            vpc=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=[subnet_id], security_group_ids=[canary_group.id]),
            opts=child,
        ).function
        # One invocation a minute, no retries: the next minute's run is the retry.
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke-config", function_name=function.name, maximum_retry_attempts=0, opts=child
        )
        schedule = aws.cloudwatch.EventRule(
            f"{name}-schedule", description="trainguard SSH canary", schedule_expression="rate(1 minute)", opts=child
        )
        aws.cloudwatch.EventTarget(f"{name}-schedule-target", rule=schedule.name, arn=function.arn, opts=child)
        aws.lambda_.Permission(
            f"{name}-schedule-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=schedule.arn,
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-errors",
            name=f"trainguard-{pulumi.get_stack()}-ssh-canary-errors",
            alarm_description=(
                "trainguard's SSH canary function failed in the last 5 minutes, so SSH freezes may go unnoticed "
                "until the agent-heartbeat or EC2 status alarms fire. trainguard rebooted nothing: a broken canary "
                "is no reason to. Look at the function's log group for the error (aws logs tail), and check the "
                "VPC endpoints for CloudWatch and EC2."
            ),
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[topic_arn],
            ok_actions=[topic_arn],
            opts=child,
        )
        self.function_name = function.name
        self.register_outputs({"function_name": function.name})
