"""AlertTopic: the encrypted SNS topic every alarm and notice goes to, with one email subscription per address."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.policies import alarm_topic, alert_key


class AlertTopic(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        emails: tuple[str, ...],
        account_id: str,
        partition: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:alerts:AlertTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        key = aws.kms.Key(
            f"{name}-key",
            description="trainguard alert topic encryption (CloudWatch alarms may use it)",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=json.dumps(alert_key(account_id, partition)),
            opts=child,
        )
        aws.kms.Alias(f"{name}-key-alias", name_prefix="alias/trainguard-alerts-", target_key_id=key.key_id, opts=child)
        topic = aws.sns.Topic(f"{name}-topic", kms_master_key_id=key.arn, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-policy",
            arn=topic.arn,
            policy=topic.arn.apply(lambda arn: json.dumps(alarm_topic(arn, account_id))),
            opts=child,
        )
        for index, email in enumerate(emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{index}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )

        self.topic_arn = topic.arn
        self.key_arn = key.arn
        self.register_outputs({"topic_arn": topic.arn, "key_arn": key.arn})
