"""What AWS would refuse, checked before `pulumi up` can find out: IAM documents, alarm timing, DLM intervals.

Strings, ranges and sizes of every resource are checked against infra.aws_rules in test_aws_rules.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.alarm_specs import instance_alarms
from infra.aws_rules import alarm_timing_problems
from infra.settings import SNAPSHOT_INTERVALS_HOURS, Settings

# Prefixes of IAM actions that only read; anything else is a write.
READ_ONLY_PREFIXES = ("Describe", "Get", "List")


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_violations(document: dict[str, Any], star_means_this_resource: bool = False) -> list[str]:
    """The rules every document the stack declares must pass.

    In a KMS key policy, Resource "*" is the key itself, not every resource
    (`star_means_this_resource`); there only the wildcard-action rule applies.
    """
    problems = []
    if document.get("Version") != "2012-10-17":
        problems.append("Version is not 2012-10-17")
    for statement in _statements(document):
        if statement.get("Effect") != "Allow":
            continue  # a Deny may be as broad as it likes
        for action in _as_list(statement.get("Action", [])):
            if action == "*" or action.endswith(":*"):
                problems.append(f"wildcard action {action}")
            verb = action.split(":", 1)[1] if ":" in action else action
            writes = not verb.startswith(READ_ONLY_PREFIXES) and action != "sts:AssumeRole"
            on_everything = "*" in _as_list(statement.get("Resource", [])) and not star_means_this_resource
            if writes and on_everything and "Condition" not in statement:
                problems.append(f"{action} on Resource * without a condition")
    return problems


def test_the_rules_catch_what_they_should() -> None:
    bad = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Allow", "Action": "ec2:RebootInstances", "Resource": "*"},
        ],
    }

    assert iam_violations(bad) == ["wildcard action s3:*", "ec2:RebootInstances on Resource * without a condition"]


def test_every_iam_document_is_valid_json_and_least_privilege(deploy) -> None:
    policies = deploy().policies()

    assert {where for where, _ in policies} == {
        "trainguard-alerts-key.policy",
        "trainguard-alerts-policy.policy",
        "trainguard-results-policy.policy",
        "trainguard-snapshots-role.assumeRolePolicy",
        "trainguard-snapshots-role-policy.policy",
        "trainguard-node-0-role.assumeRolePolicy",
        "trainguard-node-0-results.policy",
        "trainguard-node-0-bundle.policy",
        "trainguard-node-0-guard.policy",
        "trainguard-node-0-boot.policy",
        "trainguard-auto-reboot-role.assumeRolePolicy",
        "trainguard-auto-reboot-role-policy.policy",
        "trainguard-auto-reboot-relook-role.assumeRolePolicy",
        "trainguard-auto-reboot-relook-invoke.policy",
        "trainguard-canary-role.assumeRolePolicy",
        "trainguard-canary-role-policy.policy",
    }
    for where, document in policies:
        assert json.loads(json.dumps(document)) == document
        assert iam_violations(document, star_means_this_resource=where.endswith("-key.policy")) == [], where


@pytest.mark.parametrize(("period", "evaluations"), [(10, 6), (30, 1), (60, 1440), (300, 288)])
def test_alarm_timing_cloudwatch_accepts(period: int, evaluations: int) -> None:
    assert alarm_timing_problems(period, evaluations) == []


@pytest.mark.parametrize(("period", "evaluations"), [(15, 1), (90, 1), (0, 1), (60, 1441), (3600, 25), (60, 0)])
def test_alarm_timing_cloudwatch_refuses(period: int, evaluations: int) -> None:
    assert alarm_timing_problems(period, evaluations) != []


def test_every_declared_alarm_treats_missing_data_in_a_way_cloudwatch_knows(deploy) -> None:
    for alarm in deploy().of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.inputs["treatMissingData"] in ("missing", "ignore", "breaching", "notBreaching"), alarm.name


@pytest.mark.parametrize("hours", SNAPSHOT_INTERVALS_HOURS)
def test_every_dlm_interval_the_stack_can_declare_is_one_dlm_accepts(deploy, make_settings, hours: int) -> None:
    policy = deploy(make_settings(snapshot_interval_hours=hours)).one("aws:dlm/lifecyclePolicy:LifecyclePolicy")

    (schedule,) = policy.inputs["policyDetails"]["schedules"]
    assert schedule["createRule"]["interval"] in {1, 2, 3, 4, 6, 8, 12, 24}
    assert schedule["createRule"]["intervalUnit"] == "HOURS"


def test_specs_refuse_impossible_datapoints() -> None:
    spec = instance_alarms(Settings(alert_emails=("a@b.co",), ssh_allowed_cidrs=("10.0.0.0/8",)), True)[0]

    with pytest.raises(ValueError, match="datapoints"):
        type(spec)(**{**spec.__dict__, "datapoints_to_alarm": spec.evaluation_periods + 1})
