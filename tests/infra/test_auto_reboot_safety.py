"""The stack's wiring for the auto-reboot safety rules (claims, looks again, the heartbeat alarm), under mocks."""

from __future__ import annotations

import json
from typing import Any

from healthcheck import contract
from healthcheck.remediation.policy import SCHEDULER_NAME, is_agent_heartbeat
from infra.policies import snapshot_lifecycle

AUTO_REBOOT = "trainguard-auto-reboot-function"
RELOOKS = "trainguard-auto-reboot-relooks"
RELOOK_ROLE = "trainguard-auto-reboot-relook-role"
ACCOUNT = "123456789012"
PULUMI_AUTONAME_SUFFIX = 8  # "-" and seven random characters


def _function_policy(deployment: Any) -> dict[str, dict[str, Any]]:
    document = json.loads(deployment.named("trainguard-auto-reboot-role-policy").inputs["policy"])
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_function_claims_instances_only_under_the_claims_path(deploy) -> None:
    claim = _function_policy(deploy())["ClaimInstances"]

    # The path itself, for the daily sweep's listing of every claim, and what lies under it.
    assert claim["Resource"] == [
        f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter{contract.CLAIM_PATH}",
        f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter{contract.CLAIM_PATH}/*",
    ]
    assert set(claim["Action"]) == {
        "ssm:PutParameter",
        "ssm:GetParameter",
        "ssm:GetParametersByPath",
        "ssm:DeleteParameters",
    }


def test_looks_again_run_in_their_own_group_with_a_role_that_may_only_invoke_the_function(deploy) -> None:
    deployment = deploy()
    group = deployment.named(RELOOKS)
    role = deployment.named(RELOOK_ROLE)
    function = deployment.named(AUTO_REBOOT)
    function_arn = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:{function.id}"
    role_arn = f"arn:aws:iam:eu-west-1:{ACCOUNT}:{role.id}"  # as the mocks name ARNs
    group_name = "trainguard-auto-reboot-relooks"  # the mocks name it as AWS would, after the resource

    assert group.typ == "aws:scheduler/scheduleGroup:ScheduleGroup"
    assert SCHEDULER_NAME.fullmatch(group_name + "-abcdefg"[:PULUMI_AUTONAME_SUFFIX])
    variables = function.inputs["environment"]["variables"]
    assert variables["TRAINGUARD_RELOOK_GROUP"] == group_name
    assert variables["TRAINGUARD_RELOOK_ROLE_ARN"] == role_arn

    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {
        "aws:SourceAccount": ACCOUNT,
        "aws:SourceArn": f"arn:aws:scheduler:eu-west-1:{ACCOUNT}:schedule-group/{group_name}",
    }
    (invoke,) = json.loads(deployment.named("trainguard-auto-reboot-relook-invoke").inputs["policy"])["Statement"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == [function_arn, f"{function_arn}:*"]

    statements = _function_policy(deployment)
    assert statements["ScheduleOwnLooks"]["Resource"] == (
        f"arn:aws:scheduler:eu-west-1:{ACCOUNT}:schedule/{group_name}/*"
    )
    assert set(statements["ScheduleOwnLooks"]["Action"]) == {"scheduler:CreateSchedule", "scheduler:DeleteSchedule"}
    assert statements["PassOnlyTheRelookRole"]["Resource"] == role_arn
    assert statements["PassOnlyTheRelookRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}
    }


def test_the_function_may_read_alarm_states_and_the_canary_metric_and_change_neither(deploy) -> None:
    read = _function_policy(deploy())["ReadAlarmsAndCanarySsh"]

    assert read["Action"] == ["cloudwatch:DescribeAlarms", "cloudwatch:GetMetricStatistics"]


def test_the_function_recognises_the_stacks_agent_heartbeat_alarm_and_only_it(deploy) -> None:
    """Sparing a host that answers SSH hinges on the alarm's name: the stack names it as the function reads it."""
    alarms = deploy().of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    names = {alarm.name.rsplit("-alarms-", 1)[1]: alarm.inputs["name"] for alarm in alarms if "-alarms-" in alarm.name}

    assert is_agent_heartbeat(names["agent-heartbeat"])
    assert [key for key, name in names.items() if is_agent_heartbeat(name)] == ["agent-heartbeat"]
    assert not any(is_agent_heartbeat(alarm.inputs["name"]) for alarm in alarms if "-alarms-" not in alarm.name)


def test_dlm_may_tag_snapshots_as_the_aws_managed_role_does(deploy) -> None:
    """AWSDataLifecycleManagerServiceRole grants ec2:CreateTags on snapshot/* with no condition."""
    document = snapshot_lifecycle("aws", "eu-west-1")
    tagging = [s for s in document["Statement"] if s["Action"] == "ec2:CreateTags"]

    assert tagging == [
        {
            "Sid": "TagSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "arn:aws:ec2:eu-west-1::snapshot/*",
        }
    ]
    declared = json.loads(deploy().named("trainguard-snapshots-role-policy").inputs["policy"])
    assert declared == document
