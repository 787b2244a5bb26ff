"""IAM policy documents as pure functions of ARNs and ids; each grants only what its user does.

Each returns a dict; the components serialise it with json.dumps. The tests hold
every document to the rules: valid JSON, no wildcard action in an Allow, and no
write action on Resource "*" without a condition.
"""

from __future__ import annotations

from typing import Any

from healthcheck import contract

Document = dict[str, Any]


def document(*statements: dict[str, Any]) -> Document:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def assume_role(service: str) -> Document:
    """Trust policy letting one AWS service assume the role."""
    return document({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def results_writer(bucket_arn: str, instance_id: str) -> Document:
    """The instance may list and write its own prefix of the results bucket, and nothing else there."""
    return document(
        {
            "Sid": "WriteOwnPrefix",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"{bucket_arn}/{instance_id}/*",
        },
        {
            # aws s3 sync lists the destination to find what changed.
            "Sid": "ListOwnPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{instance_id}/", f"{instance_id}/*"]}},
        },
    )


def bundle_reader(bucket_arn: str, prefix: str) -> Document:
    """The instance may read the on-instance bundles, and nothing else the stack publishes."""
    return document(
        {"Sid": "ReadBundles", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/{prefix}/*"}
    )


def boot_recorder(instance_arn: str) -> Document:
    """The instance may write its boot tag (trainguard-record-boot) on itself, and no other tag anywhere.

    Every tag key the request carries must be the boot tag's, and there must be one: the history and managed
    tags, which the auto-reboot function trusts, stay out of the instance's reach.
    """
    return document(
        {
            "Sid": "RecordOwnBoot",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": instance_arn,
            "Condition": {
                "ForAllValues:StringEquals": {"aws:TagKeys": [contract.BOOT_TAG_KEY]},
                "Null": {"aws:TagKeys": "false"},
            },
        }
    )


def guard_notifier(topic_arn: str, key_arn: str) -> Document:
    """The instance's guard may email through the stack's topic, and nothing else there.

    The topic is encrypted with its own KMS key, so publishing needs the key too.
    The CloudWatch agent's managed policy lets the instance publish any metric;
    a process on it must not publish the canary's SSHResponsive, which the
    auto-reboot function trusts to spare a host that still answers SSH.
    """
    return document(
        *_tell_a_person(topic_arn, key_arn),
        {
            "Sid": "NotTheCanarysMetrics",
            "Effect": "Deny",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": contract.CANARY_NAMESPACE}},
        },
    )


def tls_only_bucket(bucket_arn: str) -> Document:
    """Refuse every request to the bucket that does not use TLS."""
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )


def alert_key(account_id: str, partition: str) -> Document:
    """Key policy for the SNS topic's KMS key: the account administers it, CloudWatch alarms may use it.

    CloudWatch cannot publish to a topic encrypted with the AWS-managed
    aws/sns key, hence a key of our own that names cloudwatch.amazonaws.com.
    """
    root = f"arn:{partition}:iam::{account_id}:root"
    return document(
        {
            "Sid": "AccountAdministersKey",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": [
                "kms:Create*",
                "kms:Describe*",
                "kms:Enable*",
                "kms:List*",
                "kms:Put*",
                "kms:Update*",
                "kms:Revoke*",
                "kms:Disable*",
                "kms:Get*",
                "kms:Delete*",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
            ],
            "Resource": "*",
        },
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        },
    )


def alarm_topic(topic_arn: str, account_id: str) -> Document:
    """Topic policy: CloudWatch alarms of this account may publish."""
    return document(
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }
    )


def snapshot_lifecycle(partition: str, region: str) -> Document:
    """DLM's execution role: snapshot and prune only volumes and snapshots tagged for it."""
    ec2 = f"arn:{partition}:ec2:{region}"
    tagged = {"StringEquals": {f"aws:ResourceTag/{contract.SNAPSHOT_TAG_KEY}": contract.SNAPSHOT_TAG_VALUE}}
    return document(
        {
            "Sid": "SnapshotTaggedVolumes",
            "Effect": "Allow",
            "Action": ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
            "Resource": [f"{ec2}:*:volume/*", f"{ec2}:*:instance/*"],
            "Condition": tagged,
        },
        {
            "Sid": "CreateSnapshotsCarryingTheTag",
            "Effect": "Allow",
            "Action": ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
            "Resource": f"{ec2}::snapshot/*",
        },
        {
            # DLM also tags snapshots after creating them (its own dlm: tags, tags from the policy), so an
            # ec2:CreateAction condition would refuse those calls. This is what the AWS-managed
            # AWSDataLifecycleManagerServiceRole grants: ec2:CreateTags on snapshot/*, unconditioned
            # (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSDataLifecycleManagerServiceRole.html),
            # narrowed here to this region.
            "Sid": "TagSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": f"{ec2}::snapshot/*",
        },
        {
            "Sid": "PruneOwnSnapshots",
            "Effect": "Allow",
            "Action": "ec2:DeleteSnapshot",
            "Resource": f"{ec2}::snapshot/*",
            "Condition": tagged,
        },
        {
            "Sid": "ReadInventory",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeSnapshots"],
            "Resource": "*",
        },
    )


def auto_reboot(
    *,
    partition: str,
    region: str,
    account_id: str,
    bucket_arn: str,
    topic_arn: str,
    key_arn: str,
    log_group_arn: str,
    relook_group: str,
    relook_role_arn: str,
) -> Document:
    """The auto-reboot function: recover only managed instances, snapshot them, keep evidence, tell a person.

    Also: claim an instance in Parameter Store (only under contract.CLAIM_PATH), read
    alarm states and the canary's SSH metric, schedule its own looks again
    (only in its own group, passing only the relook role), and delete the
    remediation snapshots past their expiry (only snapshots tagged as a
    remediation's).
    """
    ec2 = f"arn:{partition}:ec2:{region}"
    instances = f"{ec2}:{account_id}:instance/*"
    managed = {"StringEquals": {f"ec2:ResourceTag/{contract.MANAGED_TAG_KEY}": contract.MANAGED_TAG_VALUE}}
    return document(
        {
            "Sid": "RecoverManagedInstances",
            "Effect": "Allow",
            "Action": [
                "ec2:RebootInstances",
                "ec2:StopInstances",
                "ec2:StartInstances",
                "ec2:GetConsoleOutput",
                "ec2:GetConsoleScreenshot",
                "ec2:CreateSnapshots",
                "ec2:CreateTags",
            ],
            "Resource": instances,
            "Condition": managed,
        },
        {
            "Sid": "SnapshotTheirVolumes",
            "Effect": "Allow",
            "Action": "ec2:CreateSnapshots",
            "Resource": [f"{ec2}:{account_id}:volume/*", f"{ec2}::snapshot/*"],
        },
        {
            "Sid": "TagNewSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": f"{ec2}::snapshot/*",
            "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSnapshots"}},
        },
        {
            "Sid": "ReadInstances",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeSnapshots"],
            "Resource": "*",
        },
        {
            "Sid": "ExpireRemediationSnapshots",
            "Effect": "Allow",
            "Action": "ec2:DeleteSnapshot",
            "Resource": f"{ec2}::snapshot/*",
            "Condition": {
                "StringEquals": {
                    f"ec2:ResourceTag/{contract.SNAPSHOT_SOURCE_TAG_KEY}": contract.REMEDIATION_SNAPSHOT_SOURCE
                }
            },
        },
        {
            "Sid": "KeepPostMortems",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/{contract.POSTMORTEM_PREFIX}*",
        },
        *_tell_a_person(topic_arn, key_arn),
        {
            # A parameter ARN drops the name's leading slash: parameter/trainguard/claims/...; listing the path
            # itself (the daily sweep) names parameter/trainguard/claims.
            "Sid": "ClaimInstances",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter", "ssm:GetParameter", "ssm:GetParametersByPath", "ssm:DeleteParameters"],
            "Resource": [
                f"arn:{partition}:ssm:{region}:{account_id}:parameter{contract.CLAIM_PATH}",
                f"arn:{partition}:ssm:{region}:{account_id}:parameter{contract.CLAIM_PATH}/*",
            ],
        },
        {
            # Reads only. GetMetricStatistics has no resource type; DescribeAlarms is a List action, and a
            # denied read (were an alarm-ARN scope not honoured) would silently end every look again.
            "Sid": "ReadAlarmsAndCanarySsh",
            "Effect": "Allow",
            "Action": ["cloudwatch:DescribeAlarms", "cloudwatch:GetMetricStatistics"],
            "Resource": "*",
        },
        {
            "Sid": "ScheduleOwnLooks",
            "Effect": "Allow",
            "Action": ["scheduler:CreateSchedule", "scheduler:DeleteSchedule"],
            "Resource": f"arn:{partition}:scheduler:{region}:{account_id}:schedule/{relook_group}/*",
        },
        {
            "Sid": "PassOnlyTheRelookRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": relook_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        },
        _own_logs(log_group_arn),
    )


def relook_trust(*, partition: str, region: str, account_id: str, relook_group: str) -> Document:
    """Only EventBridge Scheduler, for this account's relook group, may assume the relook role.

    AWS's confused-deputy guidance for Scheduler execution roles conditions on
    aws:SourceAccount and the schedule group's ARN
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html#setting-up-execution-role).
    """
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {
                    "aws:SourceAccount": account_id,
                    "aws:SourceArn": f"arn:{partition}:scheduler:{region}:{account_id}:schedule-group/{relook_group}",
                }
            },
        }
    )


def relook_invoker(function_arn: str) -> Document:
    """The relook role may invoke the auto-reboot function, and nothing else."""
    return document(
        {
            "Sid": "InvokeAutoReboot",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [function_arn, f"{function_arn}:*"],
        }
    )


def ssh_canary(*, partition: str, region: str, account_id: str, log_group_arn: str) -> Document:
    """The SSH canary: publish to its own namespace, run inside the VPC, log. Its targets come in its event."""
    return document(
        {
            "Sid": "PublishOwnNamespace",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",  # PutMetricData has no resource type; the namespace condition scopes it
            "Condition": {"StringEquals": {"cloudwatch:namespace": contract.CANARY_NAMESPACE}},
        },
        {
            # Lambda needs this to manage the function's VPC interfaces, and it works only on "*":
            # https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html
            "Sid": "DescribeOwnNetworkInterfaces",
            "Effect": "Allow",
            "Action": "ec2:DescribeNetworkInterfaces",
            "Resource": "*",
        },
        {
            # Lambda's network interfaces in the VPC; AWS documents this account-and-region scope.
            "Sid": "VpcNetworkInterfaces",
            "Effect": "Allow",
            "Action": [
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            "Resource": f"arn:{partition}:ec2:{region}:{account_id}:*/*",
        },
        _own_logs(log_group_arn),
    )


def _tell_a_person(topic_arn: str, key_arn: str) -> list[dict[str, Any]]:
    """Publish to the alert topic, which is encrypted with its own KMS key: publishing needs the key too."""
    return [
        {"Sid": "TellAPerson", "Effect": "Allow", "Action": "sns:Publish", "Resource": topic_arn},
        {
            "Sid": "UseTheTopicKey",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key_arn,
        },
    ]


def _own_logs(log_group_arn: str) -> dict[str, Any]:
    """A function writes its own log group, and no other."""
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": f"{log_group_arn}:*",
    }
