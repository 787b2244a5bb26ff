"""AutoReboot: the Lambda that recovers hung instances, its least-privilege role, logs, retries and triggers.

Alarms invoke it directly, through one permission for every alarm whose name
starts with the stack's instance-alarm prefix (so the function's 20 KB resource
policy does not grow with the fleet); EC2's
"stopped" events reach it through EventBridge, so an instance it stopped for a
stop/start is started again without waiting inside the function.
CloudWatch invokes nothing while an alarm stays in ALARM, so the function
schedules its own look again (one-time EventBridge Scheduler schedules in its
own group, run with a role that may only invoke it). Once a day EventBridge
invokes it to sweep: remediation snapshots past their expiry, and claims left
from long ago. The stack invokes it itself (a Lambda invocation with the CRUD
lifecycle) so that `pulumi destroy`, and an update that drops instances,
deletes their claims.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from healthcheck.lambdas.auto_reboot import TIMEOUT_S
from healthcheck.remediation.events import SWEEP_SOURCE, stack_payload
from healthcheck.remediation.policy import RemediationSettings
from infra.components.packaged_function import PackagedFunction
from infra.lambda_package import AUTO_REBOOT_HANDLER
from infra.policies import auto_reboot, relook_invoker, relook_trust

MEMORY_MB = 256
LOG_RETENTION_DAYS = 30
RETRIES = 2
MAX_EVENT_AGE_S = 900  # an alarm older than 15 minutes has been superseded by newer ones
SWEEP_SCHEDULE = "rate(1 day)"


class AutoReboot(pulumi.ComponentResource):
    """The function, its looks again (a Scheduler group and the role that invokes it), and what triggers it."""

    function_arn: pulumi.Output[str]
    function_name: pulumi.Output[str]

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
        alarm_name_prefix: str,
        evidence_retain_days: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:remediation:AutoReboot", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)

        relooks = aws.scheduler.ScheduleGroup(f"{name}-relooks", opts=self._child)
        relook_role = aws.iam.Role(
            f"{name}-relook-role",
            description="trainguard: EventBridge Scheduler invokes the auto-reboot function for a look again",
            assume_role_policy=relooks.name.apply(
                lambda group: json.dumps(
                    relook_trust(partition=partition, region=region, account_id=account_id, relook_group=group)
                )
            ),
            opts=self._child,
        )
        packaged = PackagedFunction(
            name,
            handler=AUTO_REBOOT_HANDLER,
            description="trainguard: snapshot, keep the console, reboot once, never loop, email a person",
            timeout_s=TIMEOUT_S,
            memory_mb=MEMORY_MB,
            log_retention_days=LOG_RETENTION_DAYS,
            policy=lambda log_group_arn: pulumi.Output.all(
                bucket_arn, topic_arn, topic_key_arn, log_group_arn, relooks.name, relook_role.arn
            ).apply(
                lambda arns: json.dumps(
                    auto_reboot(
                        partition=partition,
                        region=region,
                        account_id=account_id,
                        bucket_arn=arns[0],
                        topic_arn=arns[1],
                        key_arn=arns[2],
                        log_group_arn=arns[3],
                        relook_group=arns[4],
                        relook_role_arn=arns[5],
                    )
                )
            ),
            environment={
                **RemediationSettings(evidence_retention=timedelta(days=evidence_retain_days)).policy_environment(),
                contract.TOPIC_ARN_VARIABLE: topic_arn,
                contract.BUCKET_VARIABLE: bucket_name,
                contract.RELOOK_GROUP_VARIABLE: relooks.name,
                contract.RELOOK_ROLE_ARN_VARIABLE: relook_role.arn,
            },
            opts=self._child,
        )
        function = self._function = packaged.function
        self._function_policy = packaged.role_policy
        aws.iam.RolePolicy(
            f"{name}-relook-invoke",
            role=relook_role.id,
            policy=function.arn.apply(lambda arn: json.dumps(relook_invoker(arn))),
            opts=self._child,
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke-config",
            function_name=function.name,
            maximum_retry_attempts=RETRIES,
            maximum_event_age_in_seconds=MAX_EVENT_AGE_S,
            destination_config={"on_failure": {"destination": topic_arn}},
            opts=self._child,
        )
        self._stopped_instances(function)
        self._daily_sweep(function)
        self._alarms_may_invoke(
            function, f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:", account_id, alarm_name_prefix
        )
        self.function_arn = function.arn
        self.function_name = function.name
        self.register_outputs(
            {"function_arn": function.arn, "function_name": function.name, "relook_group": relooks.name}
        )

    def forget_claims_of(self, instance_ids: list[pulumi.Output[str]]) -> None:
        """Invoke the function on every create, update and delete of this resource with the stack's instances, so
        an update that drops instances, and `pulumi destroy`, delete the claims they left in Parameter Store."""
        aws.lambda_.Invocation(
            f"{self._name}-claims",
            function_name=self._function.name,
            input=pulumi.Output.all(*instance_ids).apply(lambda ids: json.dumps(stack_payload(list(ids)))),
            lifecycle_scope="CRUD",
            # Destroyed (and so invoked) before the function and before what the function may do.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._function, self._function_policy]),
        )

    def _stopped_instances(self, function: aws.lambda_.Function) -> None:
        """EC2's "stopped" events, so an instance the function stopped for a stop/start is started again."""
        stopped = aws.cloudwatch.EventRule(
            f"{self._name}-stopped",
            description="trainguard: EC2 instances that stopped, so a stop/start can finish",
            event_pattern=json.dumps(
                {
                    "source": ["aws.ec2"],
                    "detail-type": ["EC2 Instance State-change Notification"],
                    "detail": {"state": ["stopped"]},
                }
            ),
            opts=self._child,
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-stopped-target", rule=stopped.name, arn=function.arn, opts=self._child
        )
        aws.lambda_.Permission(
            f"{self._name}-stopped-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=stopped.arn,
            opts=self._child,
        )

    def _daily_sweep(self, function: aws.lambda_.Function) -> None:
        """Once a day: delete remediation snapshots past their expiry tag, and claims left from long ago."""
        sweep = aws.cloudwatch.EventRule(
            f"{self._name}-sweep",
            description="trainguard: delete expired remediation snapshots and old claims",
            schedule_expression=SWEEP_SCHEDULE,
            opts=self._child,
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-sweep-target",
            rule=sweep.name,
            arn=function.arn,
            input=json.dumps({"source": SWEEP_SOURCE}),
            opts=self._child,
        )
        aws.lambda_.Permission(
            f"{self._name}-sweep-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=sweep.arn,
            opts=self._child,
        )

    def _alarms_may_invoke(
        self, function: aws.lambda_.Function, alarm_arn_prefix: str, account_id: str, alarm_name_prefix: str
    ) -> None:
        """One grant for every instance alarm of this stack, however many instances there are."""
        aws.lambda_.Permission(
            f"{self._name}-alarms-permission",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="lambda.alarms.cloudwatch.amazonaws.com",
            source_arn=f"{alarm_arn_prefix}{alarm_name_prefix}i-*",
            source_account=account_id,
            opts=self._child,
        )
