"""InstanceAlarms: the per-instance alarms of infra.alarm_specs, emailing on ALARM and on OK.

Each is named trainguard-<stack>-<instance id>-<key> (healthcheck.contract):
the auto-reboot function grants invocation to that name pattern once
(AutoReboot), so its resource policy does not grow with the fleet.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.alarm_specs import AlarmSpec


class InstanceAlarms(pulumi.ComponentResource):
    alarm_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        *,
        instance_id: pulumi.Output[str],
        stack: str,
        specs: tuple[AlarmSpec, ...],
        topic_arn: pulumi.Output[str],
        bucket_name: pulumi.Output[str],
        region: str,
        partition: str,
        auto_reboot_arn: pulumi.Output[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:monitoring:InstanceAlarms", name, None, opts)
        recover_action = f"arn:{partition}:automate:{region}:ec2:recover"
        self.alarm_arns = {}
        for spec in specs:
            actions: list[pulumi.Input[str]] = [topic_arn]
            if spec.recover:
                actions.append(recover_action)
            if spec.invokes_auto_reboot:
                actions.append(auto_reboot_arn)
            alarm = self._alarm(name, spec, instance_id, stack, region, topic_arn, bucket_name, actions)
            self.alarm_arns[spec.key] = alarm.arn
        self.register_outputs({"alarm_arns": self.alarm_arns})

    def _alarm(
        self,
        name: str,
        spec: AlarmSpec,
        instance_id: pulumi.Output[str],
        stack: str,
        region: str,
        topic_arn: pulumi.Output[str],
        bucket_name: pulumi.Output[str],
        actions: list[pulumi.Input[str]],
    ) -> aws.cloudwatch.MetricAlarm:
        return aws.cloudwatch.MetricAlarm(
            f"{name}-{spec.key}",
            name=instance_id.apply(lambda iid: contract.instance_alarm_name(stack, iid, spec.key)),
            alarm_description=pulumi.Output.all(instance_id, bucket_name).apply(
                lambda args: spec.describe(args[0], args[1], region)
            ),
            namespace=spec.namespace,
            metric_name=spec.metric_name,
            dimensions=instance_id.apply(lambda iid: {contract.INSTANCE_DIMENSION: iid, **spec.extra_dimensions}),
            statistic=spec.statistic,
            period=spec.period,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            threshold=spec.threshold,
            comparison_operator=spec.comparison_operator,
            treat_missing_data=spec.treat_missing_data,
            alarm_actions=actions,
            ok_actions=[topic_arn],
            opts=pulumi.ResourceOptions(parent=self),
        )
