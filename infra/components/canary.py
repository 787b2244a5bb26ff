"""SshCanary: a Lambda inside the instances' VPC that samples every instance's sshd banner, every few seconds.

Its targets (instance id, private address, port) travel in the schedule's
input, built from the instances, so it calls no EC2 API. It has its own
security group, which the instances' group admits on port 22, and reaches
CloudWatch through one interface endpoint (a function in a VPC has no route to
the public API endpoints). The endpoint has no private DNS: with it, the
public name monitoring.<region>.amazonaws.com would resolve, for the whole
VPC, to an interface only the canary may reach, and every instance's
CloudWatch agent would go silent. The canary is given the endpoint's own DNS
name instead. If the canary itself fails, an alarm on its Errors emails a
person: a broken canary is never a reason to reboot anything.

On `pulumi destroy`, EC2 releases the function's network interfaces many
minutes after the function is gone, and only then can the security groups be
deleted: their delete timeout covers that.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.components.packaged_function import PackagedFunction
from infra.detection import Detection
from infra.policies import ssh_canary

HANDLER = "healthcheck.lambdas.ssh_canary.handler"
# A minute of slots, the last up to one interval after the minute's start, then its probe and the publish.
TIMEOUT_S = 75
MEMORY_MB = 128
LOG_RETENTION_DAYS = 14
SSH_PORT = 22
# Lambda releases a deleted function's VPC interfaces only after many minutes, and the groups cannot go
# before them; the provider waits 15 minutes by default.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html
SECURITY_GROUP_DELETE_TIMEOUT = "60m"


def errors_alarm_name(stack: str) -> str:
    """The canary's own alarm: trainguard-<stack>-ssh-canary-errors."""
    return contract.stack_alarm_name(stack, contract.CANARY_ERRORS_ALARM_KEY)


def schedule_input(targets: list[tuple[str, str]], samples: int) -> str:
    """The canary's event: every instance's id and private address (pure)."""
    return json.dumps(
        {
            "targets": [
                {"instance_id": instance_id, "address": address, "port": SSH_PORT} for instance_id, address in targets
            ],
            "samples": samples,
        },
        separators=(",", ":"),
    )


class SshCanary(pulumi.ComponentResource):
    """The canary's network (its security group and the CloudWatch endpoint), function, schedule and errors alarm."""

    function_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        vpc_id: str,
        subnet_id: str,
        instance_security_group_id: pulumi.Output[str],
        targets: list[tuple[pulumi.Output[str], pulumi.Output[str]]],
        detection: Detection,
        topic_arn: pulumi.Output[str],
        region: str,
        partition: str,
        account_id: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:monitoring:SshCanary", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)

        canary_group, endpoint = self._network(vpc_id, subnet_id, instance_security_group_id, region)
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
                contract.CANARY_INTERVAL_VARIABLE: str(detection.canary_interval_s),
                # The endpoint's regional name comes first in its DNS entries.
                contract.MONITORING_ENDPOINT_VARIABLE: endpoint.dns_entries.apply(
                    lambda entries: f"https://{entries[0].dns_name}"
                ),
            },
            vpc=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=[subnet_id], security_group_ids=[canary_group.id]),
            opts=self._child,
        ).function
        self._schedule(function, targets, detection)
        self._errors_alarm(function, topic_arn)
        self.function_name = function.name
        self.register_outputs({"function_name": function.name})

    def _network(
        self, vpc_id: str, subnet_id: str, instance_security_group_id: pulumi.Output[str], region: str
    ) -> tuple[aws.ec2.SecurityGroup, aws.ec2.VpcEndpoint]:
        """The canary's security group, which reaches the instances' port 22 and the CloudWatch endpoint only."""
        name = self._name
        slow_delete = pulumi.ResourceOptions(
            parent=self, custom_timeouts=pulumi.CustomTimeouts(delete=SECURITY_GROUP_DELETE_TIMEOUT)
        )
        canary_group = aws.ec2.SecurityGroup(
            f"{name}-sg", description="trainguard SSH canary", vpc_id=vpc_id, opts=slow_delete
        )
        # EC2 accepts only a-zA-Z0-9 and ._-:/()#,@[]+=&;{}!$* and spaces here (infra.aws_rules).
        endpoint_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints-sg",
            description="trainguard canary CloudWatch endpoint",
            vpc_id=vpc_id,
            opts=slow_delete,
        )
        for rule, (group, peer, port) in {
            "to-ssh": (canary_group.id, instance_security_group_id, SSH_PORT),
            "to-endpoints": (canary_group.id, endpoint_group.id, 443),
        }.items():
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{rule}",
                security_group_id=group,
                referenced_security_group_id=peer,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                opts=self._child,
            )
        for rule, (group, port) in {
            "ssh-from-canary": (instance_security_group_id, SSH_PORT),
            "endpoints-from-canary": (endpoint_group.id, 443),
        }.items():
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-{rule}",
                security_group_id=group,
                referenced_security_group_id=canary_group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                opts=self._child,
            )
        endpoint = aws.ec2.VpcEndpoint(
            f"{name}-monitoring-endpoint",
            vpc_id=vpc_id,
            service_name=f"com.amazonaws.{region}.monitoring",
            vpc_endpoint_type="Interface",
            subnet_ids=[subnet_id],
            security_group_ids=[endpoint_group.id],
            private_dns_enabled=False,
            opts=self._child,
        )
        return canary_group, endpoint

    def _schedule(
        self,
        function: aws.lambda_.Function,
        targets: list[tuple[pulumi.Output[str], pulumi.Output[str]]],
        detection: Detection,
    ) -> None:
        """One invocation a minute, no retries (the next minute's run is the retry), the targets in its input."""
        name = self._name
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke-config", function_name=function.name, maximum_retry_attempts=0, opts=self._child
        )
        schedule = aws.cloudwatch.EventRule(
            f"{name}-schedule",
            description="trainguard SSH canary",
            schedule_expression="rate(1 minute)",
            opts=self._child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-schedule-target",
            rule=schedule.name,
            arn=function.arn,
            input=pulumi.Output.all(*(pulumi.Output.all(iid, address) for iid, address in targets)).apply(
                lambda pairs: schedule_input([(str(p[0]), str(p[1])) for p in pairs], detection.samples_per_minute)
            ),
            opts=self._child,
        )
        aws.lambda_.Permission(
            f"{name}-schedule-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=schedule.arn,
            opts=self._child,
        )

    def _errors_alarm(self, function: aws.lambda_.Function, topic_arn: pulumi.Output[str]) -> None:
        """A broken canary emails a person; it is never a reason to reboot anything."""
        aws.cloudwatch.MetricAlarm(
            f"{self._name}-errors",
            name=errors_alarm_name(pulumi.get_stack()),
            alarm_description=(
                "trainguard's SSH canary function failed in the last 5 minutes, so SSH freezes may go unnoticed "
                "until the agent-heartbeat or EC2 status alarms fire. trainguard rebooted nothing: a broken canary "
                "is no reason to. Look at the function's log group for the error (aws logs tail), and check the "
                "VPC endpoint for CloudWatch."
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
            opts=self._child,
        )
