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
    assert function["timeout"] >= 60 + 10 / 2 + 2  # the minute's last slot, its probe and the publish
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
    (endpoint,) = deployment.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["serviceName"] == "com.amazonaws.eu-west-1.monitoring"  # no EC2 API: targets come in
    assert endpoint.inputs["privateDnsEnabled"] is False  # or the instances' agents could not publish
    assert endpoint.inputs["securityGroupIds"] == [endpoints]


def test_the_canary_is_given_its_targets_and_the_endpoint_and_calls_no_ec2_api(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    variables = deployment.named("trainguard-canary-function").inputs["environment"]["variables"]
    event = json.loads(deployment.named("trainguard-canary-schedule-target").inputs["input"])
    policy = json.loads(deployment.named("trainguard-canary-role-policy").inputs["policy"])
    (endpoint,) = deployment.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")

    assert variables["TRAINGUARD_MONITORING_ENDPOINT"] == (
        f"https://{endpoint.id}-abcdefgh.monitoring.eu-west-1.vpce.amazonaws.com"
    )
    # The mocks give instance i-<n> the private address 172.31.0.<n + 4>.
    assert {t["instance_id"]: t["address"] for t in event["targets"]} == {
        iid: f"172.31.0.{int(iid[2:], 16) + 4}" for iid in deployment.outputs["instance_ids"]
    }
    assert {t["port"] for t in event["targets"]} == {22}
    assert event["samples"] == 6
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions & {"ec2:DescribeInstances", "ec2:DescribeInstanceStatus"} == set()


def test_the_canary_security_groups_wait_for_lambdas_interfaces_on_destroy(deploy) -> None:
    options = deploy().mocks.options

    for group in ("trainguard-canary-sg", "trainguard-canary-endpoints-sg"):
        timeouts = options[group].custom_timeouts
        assert timeouts is not None and timeouts.delete is not None
        assert int(timeouts.delete.removesuffix("m")) >= 45, group


def test_canary_role_publishes_only_to_its_namespace(deploy) -> None:
    document = json.loads(deploy().named("trainguard-canary-role-policy").inputs["policy"])
    statements = {s["Sid"]: s for s in document["Statement"]}

    assert statements["PublishOwnNamespace"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Trainguard"}}
    assert statements["VpcNetworkInterfaces"]["Resource"] == "arn:aws:ec2:eu-west-1:123456789012:*/*"


def _alarm(deployment, key: str) -> dict:
    return deployment.named(f"trainguard-node-0-alarms-{key}").inputs


def test_ssh_alarm_needs_six_of_eight_ten_second_datapoints_and_invokes_the_reboot(deploy) -> None:
    deployment = deploy()
    alarm = _alarm(deployment, "ssh-unresponsive")
    function = f"arn:aws:lambda:eu-west-1:123456789012:{deployment.named('trainguard-auto-reboot-function').id}"

    assert (alarm["namespace"], alarm["metricName"]) == ("Trainguard", "SSHResponsive")
    # M of N: two slots of slack for slots a late or cold invocation missed.
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (10, 8, 6)
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
        "userspace_freeze": 110,
        "agent_silent": 305,
        "instance_status": 305,
        "system_status": 245,
    }
    assert defaults["detection_budget_seconds"]["userspace_freeze"] <= 120
    # first slot + 5 more failing + 1 slot of slack + probe timeout + evaluation delay + action latency
    assert slow["detection_budget_seconds"]["userspace_freeze"] == 30 + 5 * 30 + 1 * 30 + 15 + 20 + 5
    assert defaults["monitoring_cost_usd_month"] == 20.69
    assert _alarm(slow_deployment, "ssh-unresponsive")["period"] == 30
