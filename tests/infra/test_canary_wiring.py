"""The SSH canary and the freeze alarms as the stack declares them (Pulumi mocks)."""

from __future__ import annotations

import json

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_canary_runs_every_minute_inside_the_vpc(deploy) -> None:
    deployment = deploy()
    function = deployment.named("trainguard-canary-function").inputs
    schedule = deployment.named("trainguard-canary-schedule").inputs
    target = deployment.named("trainguard-canary-schedule-target").inputs
    permission = deployment.named("trainguard-canary-schedule-permission").inputs

    assert function["handler"] == "healthcheck.lambdas.ssh_canary.handler"
    assert (function["runtime"], function["architectures"]) == ("python3.12", ["arm64"])
    assert function["vpcConfig"] == {
        "subnetIds": ["subnet-0aaaaaaaaaaaaaaaa"],
        "securityGroupIds": [deployment.named("trainguard-canary-sg").id],
    }
    assert function["environment"]["variables"]["TRAINGUARD_CANARY_INTERVAL_SECONDS"] == "10"
    assert schedule["scheduleExpression"] == "rate(1 minute)"
    assert target["arn"].endswith(deployment.named("trainguard-canary-function").id)
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["sourceArn"].endswith(deployment.named("trainguard-canary-schedule").id)


def test_security_groups_admit_the_canary_on_22_and_its_endpoints_on_443(deploy) -> None:
    deployment = deploy()
    canary, instances = deployment.named("trainguard-canary-sg").id, deployment.named("trainguard-ssh-sg").id
    endpoints = deployment.named("trainguard-canary-endpoints-sg").id

    def rule(name: str) -> tuple[str, str, int]:
        inputs = deployment.named(name).inputs
        return inputs["securityGroupId"], inputs["referencedSecurityGroupId"], inputs["fromPort"]

    assert rule("trainguard-canary-ssh-from-canary") == (instances, canary, 22)
    assert rule("trainguard-canary-to-ssh") == (canary, instances, 22)
    assert rule("trainguard-canary-to-endpoints") == (canary, endpoints, 443)
    assert rule("trainguard-canary-endpoints-from-canary") == (endpoints, canary, 443)
    services = sorted(e.inputs["serviceName"] for e in deployment.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"))
    assert services == ["com.amazonaws.eu-west-1.ec2", "com.amazonaws.eu-west-1.monitoring"]


def test_canary_role_publishes_only_to_its_namespace(deploy) -> None:
    document = json.loads(deploy().named("trainguard-canary-role-policy").inputs["policy"])
    statements = {s["Sid"]: s for s in document["Statement"]}

    assert statements["PublishOwnNamespace"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Trainguard"}}
    assert statements["VpcNetworkInterfaces"]["Resource"] == "arn:aws:ec2:eu-west-1:123456789012:*/*"


def _alarm(deployment, key: str) -> dict:
    return deployment.named(f"trainguard-node-0-alarms-{key}").inputs


def test_ssh_alarm_needs_six_of_six_ten_second_datapoints_and_invokes_the_reboot(deploy) -> None:
    deployment = deploy()
    alarm = _alarm(deployment, "ssh-unresponsive")
    function = f"arn:aws:lambda:eu-west-1:123456789012:{deployment.named('trainguard-auto-reboot-function').id}"

    assert (alarm["namespace"], alarm["metricName"]) == ("Trainguard", "SSHResponsive")
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (10, 6, 6)
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("LessThanThreshold", 1)
    assert alarm["treatMissingData"] == "notBreaching"
    assert alarm["dimensions"] == {"InstanceId": deployment.outputs["instance_ids"][0]}
    assert alarm["alarmActions"] == [deployment.outputs["topic_arn"], function]


def test_heartbeat_alarm_fires_on_missing_agent_data_and_invokes_the_reboot(deploy, make_settings) -> None:
    deployment = deploy(make_settings(heartbeat_missing_minutes=4))
    alarm = _alarm(deployment, "agent-heartbeat")

    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == (
        "CWAgent",
        "mem_used_percent",
        "SampleCount",
    )
    assert (alarm["period"], alarm["evaluationPeriods"]) == (60, 4)
    assert alarm["treatMissingData"] == "breaching"
    assert len(alarm["alarmActions"]) == 2
    assert "a stopped or booting instance is left alone" in alarm["alarmDescription"]


def test_canary_errors_email_a_person_and_reboot_nothing(deploy) -> None:
    deployment = deploy()
    alarm = deployment.named("trainguard-canary-errors").inputs

    assert (alarm["namespace"], alarm["metricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["dimensions"] == {"FunctionName": "trainguard-canary-function"}
    assert alarm["alarmActions"] == [deployment.outputs["topic_arn"]]
    assert "rebooted nothing" in alarm["alarmDescription"]


def test_stack_exports_its_detection_budget_and_monitoring_cost(deploy, make_settings) -> None:
    defaults = deploy().outputs
    slow_deployment = deploy(make_settings(canary_interval_seconds=30, ssh_unresponsive_seconds=180))
    slow = slow_deployment.outputs

    assert defaults["detection_budget_seconds"] == {
        "userspace_freeze": 90,
        "agent_silent": 305,
        "instance_status": 305,
        "system_status": 245,
    }
    assert defaults["detection_budget_seconds"]["userspace_freeze"] <= 120
    assert slow["detection_budget_seconds"]["userspace_freeze"] == 30 + 5 * 30 + 15 + 25
    assert defaults["monitoring_cost_usd_month"] == 30.95
    assert _alarm(slow_deployment, "ssh-unresponsive")["period"] == 30
