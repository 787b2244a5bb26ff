"""Every resource of the largest plan the settings allow, held to AWS's documented constraints (infra.aws_rules).

Mocks accept any string: these tests are what stands between a character AWS
refuses (or a resource policy past its size) and a `pulumi up` that fails
halfway. A new resource of a known type is checked here without a new test,
and a new description or name input without a rule fails the coverage test.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest

from infra.aws_rules import MAX_LAMBDA_POLICY_BYTES, RULES, Rule, lambda_policy_bytes, violations

PERMISSION = "aws:lambda/permission:Permission"


def test_the_largest_plan_breaks_no_documented_aws_constraint(largest_plan) -> None:
    problems = [
        f"{resource.name}: {problem}"
        for resource in largest_plan.mocks.resources
        for problem in violations(resource.typ, resource.inputs)
    ]

    assert problems == []
    assert len(largest_plan.of_type("aws:ec2/instance:Instance")) == 20


def test_every_description_and_name_the_stack_sets_has_a_rule(largest_plan) -> None:
    """A new resource type, or a new description on one, must come with its AWS rule."""
    unruled = sorted(
        {
            f"{resource.typ} {key}"
            for resource in largest_plan.mocks.resources
            if resource.typ.startswith("aws:")
            for key, value in resource.inputs.items()
            if isinstance(value, str)
            and (key.lower().endswith(("description", "name", "prefix")))
            and key not in EXEMPT.get(resource.typ, ())
            and (resource.typ, key) not in RULES
        }
    )

    assert unruled == []


# Inputs that name another resource (checked where that resource is declared), not a name being set.
EXEMPT = {
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": ("functionName",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName",),
    "aws:iam/instanceProfile:InstanceProfile": (),
    "aws:ec2/instance:Instance": ("keyName",),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName",),
    "aws:ec2/keyPair:KeyPair": (),
    "aws:ssm/association:Association": ("name",),  # the SSM document's name, AWS's own
    "aws:lambda/invocation:Invocation": ("functionName",),
}


def test_the_auto_reboot_policy_does_not_grow_with_the_fleet(deploy, make_settings, largest_plan) -> None:
    one, twenty = deploy(make_settings()), largest_plan

    def permissions(deployment) -> list[dict[str, Any]]:
        return [p.inputs for p in deployment.of_type(PERMISSION)]

    assert len(permissions(one)) == len(permissions(twenty))
    for deployment in (one, twenty):
        by_function: dict[str, list[dict[str, Any]]] = {}
        for permission in permissions(deployment):
            by_function.setdefault(permission["function"], []).append(permission)
        for function, granted in by_function.items():
            assert lambda_policy_bytes(granted) < MAX_LAMBDA_POLICY_BYTES / 4, function


def test_the_alarms_permission_is_scoped_to_this_stacks_alarms_and_account(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    (granted,) = [p.inputs for p in deployment.of_type(PERMISSION) if "alarms" in p.inputs["principal"]]
    alarm_arns = [
        f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{a.inputs['name']}"
        for a in deployment.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if any(str(action).startswith("arn:aws:lambda:") for action in a.inputs["alarmActions"])
    ]

    assert granted["sourceArn"] == "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:trainguard-test-i-*"
    assert granted["sourceAccount"] == "123456789012"
    assert len(alarm_arns) == 2 * 3
    assert all(arn.startswith(granted["sourceArn"].removesuffix("*")) for arn in alarm_arns)


def test_no_private_dns_endpoint_shuts_the_instances_out(largest_plan) -> None:
    """An interface endpoint with private DNS answers for the whole VPC: its group must admit the instances."""
    instance_groups = {
        g for i in largest_plan.of_type("aws:ec2/instance:Instance") for g in i.inputs["vpcSecurityGroupIds"]
    }
    ingress = largest_plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")

    def admits_instances(group: str) -> bool:
        for rule in (r.inputs for r in ingress if r.inputs["securityGroupId"] == group):
            if rule.get("referencedSecurityGroupId") in instance_groups:
                return True
            if rule.get("cidrIpv4") and ipaddress.ip_network(rule["cidrIpv4"]).prefixlen == 0:
                return True
        return False

    for endpoint in largest_plan.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
        if endpoint.inputs.get("privateDnsEnabled"):
            assert all(admits_instances(g) for g in endpoint.inputs["securityGroupIds"]), endpoint.name


@pytest.mark.parametrize(
    ("typ", "inputs", "fragment"),
    [
        ("aws:dlm/lifecyclePolicy:LifecyclePolicy", {"description": "trainguard: every 1h, keep 24"}, "',:'"),
        ("aws:ec2/securityGroup:SecurityGroup", {"description": "trainguard canary's endpoints"}, '"\'"'),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", {"alarmDescription": "x" * 1025}, "length 1025"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", {"period": 15, "evaluationPeriods": 1}, "period 15s"),
        (
            "aws:cloudwatch/metricAlarm:MetricAlarm",
            {"period": 10, "evaluationPeriods": 7, "datapointsToAlarm": 8},
            "1..7",
        ),
        ("aws:ec2/instance:Instance", {"userData": "x" * 16385}, "16385 bytes"),
        ("aws:ec2/instance:Instance", {"metadataOptions": {"httpPutResponseHopLimit": 65}}, "outside 1..64"),
        ("aws:dlm/lifecyclePolicy:LifecyclePolicy", {"policyDetails": {"schedules": [{"name": "every 1h!"}]}}, "!"),
        ("aws:ssm/association:Association", {"associationName": "a b"}, "does not match"),
        ("aws:ssm/association:Association", {"parameters": {"executionTimeout": "28801"}}, "does not match"),
        ("aws:cloudwatch/logGroup:LogGroup", {"retentionInDays": 10}, "not one of"),
    ],
)
def test_the_rules_catch_what_aws_refuses(typ: str, inputs: dict[str, Any], fragment: str) -> None:
    assert any(fragment in problem for problem in violations(typ, inputs)), violations(typ, inputs)


def test_a_policy_of_one_permission_per_alarm_passes_20_kb_at_the_fleet_size_settings_allow() -> None:
    """What the stack did before: 3 alarm permissions per instance, each with its own source ARN."""
    per_alarm = [
        {
            "action": "lambda:InvokeFunction",
            "function": "trainguard-auto-reboot-function-1234567",
            "principal": "lambda.alarms.cloudwatch.amazonaws.com",
            "sourceArn": f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:trainguard-i-{n:017x}-{key}",
            "sourceAccount": "123456789012",
        }
        for n in range(20)
        for key in ("ssh-unresponsive", "agent-heartbeat", "instance-status")
    ]

    assert lambda_policy_bytes(per_alarm) > MAX_LAMBDA_POLICY_BYTES


def _botocore_limit(api: tuple[str, str, str]) -> dict[str, Any]:
    service, operation, path = api
    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    for part in path.split("."):
        shape = shape.members[part]
        while shape.type_name == "list":
            shape = shape.member
    return dict(shape.metadata)


def _with_api() -> Iterator[tuple[str, Rule]]:
    for (typ, path), rule in RULES.items():
        if rule.api is not None:
            yield f"{typ} {path}", rule


@pytest.mark.parametrize(("where", "rule"), list(_with_api()))
def test_the_table_matches_awss_own_api_model(where: str, rule: Rule) -> None:
    """botocore ships AWS's service models: where they state a limit, the table states the same one."""
    assert rule.api is not None
    limit = _botocore_limit(rule.api)

    if "max" in limit and rule.max_length is not None:
        assert rule.max_length == limit["max"], where
    if "pattern" in limit and rule.pattern is not None:
        # Same verdict on every Latin-1 character and a few beyond (three of each, for length quantifiers).
        for code in [*range(0x100), 0x2019, 0x4E2D]:
            text = chr(code) * 3
            assert bool(re.fullmatch(limit["pattern"], text)) == bool(re.fullmatch(rule.pattern, text)), (where, code)


def test_every_rule_cites_an_aws_page() -> None:
    assert all(rule.source.startswith("https://docs.aws.amazon.com/") for rule in RULES.values())
    assert json.dumps([r.source for r in RULES.values()])
