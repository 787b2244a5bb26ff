"""InstanceAlarms: the per-instance alarms of infra.alarm_specs, emailing on ALARM and on OK."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.alarm_specs import AlarmSpec


class InstanceAlarms(pulumi.ComponentResource):
    alarm_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        *,
        instance_id: pulumi.Output[str],
        specs: tuple[AlarmSpec, ...],
        topic_arn: pulumi.Output[str],
        bucket_name: pulumi.Output[str],
        region: str,
        partition: str,
        auto_reboot_arn: pulumi.Output[str],
        account_id: str,
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
            alarm = self._alarm(name, spec, instance_id, topic_arn, bucket_name, actions)
            if spec.invokes_auto_reboot:
                # Scoped to this alarm: no other alarm, and no other account, may invoke the function.
                aws.lambda_.Permission(
                    f"{name}-{spec.key}-invoke",
                    action="lambda:InvokeFunction",
                    function=auto_reboot_arn,
                    principal="lambda.alarms.cloudwatch.amazonaws.com",
                    source_arn=alarm.arn,
                    source_account=account_id,
                    opts=pulumi.ResourceOptions(parent=self),
                )
            self.alarm_arns[spec.key] = alarm.arn
        self.register_outputs({"alarm_arns": self.alarm_arns})

    def _alarm(
        self,
        name: str,
        spec: AlarmSpec,
        instance_id: pulumi.Output[str],
        topic_arn: pulumi.Output[str],
        bucket_name: pulumi.Output[str],
        actions: list[pulumi.Input[str]],
    ) -> aws.cloudwatch.MetricAlarm:
        return aws.cloudwatch.MetricAlarm(
            f"{name}-{spec.key}",
            name=instance_id.apply(lambda iid: f"trainguard-{iid}-{spec.key}"),
            alarm_description=pulumi.Output.all(instance_id, bucket_name).apply(
                lambda args: spec.describe(args[0], args[1])
            ),
            namespace=spec.namespace,
            metric_name=spec.metric_name,
            dimensions=instance_id.apply(lambda iid: {"InstanceId": iid, **spec.extra_dimensions}),
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
