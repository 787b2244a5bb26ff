"""The stack under Pulumi mocks: every property the deployment promises, asserted on what it declares."""

from __future__ import annotations

import json
import re

import pytest

from infra.stack import PlacementError

INSTANCE = "aws:ec2/instance:Instance"
EIP = "aws:ec2/eip:Eip"
VOLUME = "aws:ebs/volume:Volume"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_instance_is_hardened_and_watched(deploy) -> None:
    instance = deploy().one(INSTANCE).inputs

    assert instance["metadataOptions"]["httpTokens"] == "required"
    # Containers on the instance (Docker, NGC images) sit one hop further away and need the role too.
    assert instance["metadataOptions"]["httpPutResponseHopLimit"] == 2
    assert instance["rootBlockDevice"] == {
        "volumeType": "gp3",
        "volumeSize": 100,
        "encrypted": True,
        "deleteOnTermination": True,
        "tags": {"Name": "trainguard-node-0-root", "trainguard:managed": "true"},
    }
    assert instance["monitoring"] is False  # detailed monitoring is billed and no alarm needs it
    # The stack's name, so `trainguard status` finds its instances.
    assert instance["tags"] == {"Name": "trainguard-node-0", "trainguard:managed": "true", "trainguard:stack": "test"}
    assert instance["instanceType"] == "g5.xlarge"
    assert instance["ami"] == "ami-0dee9dee9dee9dee9"
    assert instance["iamInstanceProfile"] == "trainguard-node-0-profile"
    assert instance["keyName"] == "trainguard-key-key"


def test_deep_learning_ami_is_looked_up_for_the_instance_architecture(deploy, make_settings) -> None:
    arm = deploy(make_settings(instance_type="g5g.xlarge"), architectures=("arm64",))
    pinned = deploy(make_settings(ami_id="ami-0123456789abcdef0"))

    (ami_call,) = [call for token, call in arm.mocks.calls if token == "aws:ec2/getAmi:getAmi"]
    filters = {f["name"]: f["values"] for f in ami_call["filters"]}
    assert filters["name"] == ["Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]
    assert filters["architecture"] == ["arm64"]
    assert ami_call["owners"] == ["amazon"] and ami_call["mostRecent"] is True
    assert pinned.one(INSTANCE).inputs["ami"] == "ami-0123456789abcdef0"
    assert not [token for token, _ in pinned.mocks.calls if token == "aws:ec2/getAmi:getAmi"]


def test_default_subnet_is_in_a_zone_that_offers_the_instance_type(deploy, make_settings) -> None:
    deployment = deploy()

    (subnets_call,) = [call for token, call in deployment.mocks.calls if token == "aws:ec2/getSubnets:getSubnets"]
    filters = {f["name"]: f["values"] for f in subnets_call["filters"]}
    assert filters["availability-zone"] == ["eu-west-1a", "eu-west-1b"]
    assert filters["default-for-az"] == ["true"]
    assert deployment.one(INSTANCE).inputs["subnetId"] == "subnet-0aaaaaaaaaaaaaaaa"
    chosen = deploy(make_settings(subnet_id="subnet-0123456789abcdef0"))
    assert chosen.one(INSTANCE).inputs["subnetId"] == "subnet-0123456789abcdef0"


def test_the_default_subnet_is_in_a_zone_with_the_cloudwatch_endpoint_and_vpc_lambda(deploy) -> None:
    """eu-west-1a offers the instance type but neither the interface endpoint nor (its stand-in) VPC Lambda."""
    deployment = deploy(monitoring_zones=("eu-west-1b", "eu-west-1c"), lambda_zones=("eu-west-1b",))

    endpoint = deployment.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert deployment.one(INSTANCE).inputs["subnetId"] == "subnet-0bbbbbbbbbbbbbbbb"
    assert endpoint["subnetIds"] == ["subnet-0bbbbbbbbbbbbbbbb"]
    services = [call["service"] for token, call in deployment.mocks.calls if token.endswith("getVpcEndpointService")]
    assert sorted(services) == ["lambda", "monitoring"]


def test_no_zone_with_everything_is_refused_saying_which_zone_offers_what(deploy) -> None:
    with pytest.raises(PlacementError) as caught:
        deploy(type_zones=("eu-west-1a",), monitoring_zones=("eu-west-1b",))

    (line,) = str(caught.value).splitlines()
    assert "g5.xlarge in eu-west-1a" in line
    assert "the CloudWatch interface endpoint in eu-west-1b" in line
    assert "set trainguard:subnetId" in line


def test_a_configured_subnet_in_a_zone_without_the_endpoint_is_refused(deploy, make_settings) -> None:
    with pytest.raises(PlacementError, match="subnet-0123456789abcdef0 is in eu-west-1a, which lacks"):
        deploy(make_settings(subnet_id="subnet-0123456789abcdef0"), monitoring_zones=("eu-west-1b",))


@pytest.mark.parametrize("own_table", [True, False], ids=["own-route-table", "main-route-table"])
def test_a_subnet_without_a_route_out_is_refused_unless_the_user_says_it_reaches_aws(
    deploy, make_settings, own_table: bool
) -> None:
    private = make_settings(subnet_id="subnet-0123456789abcdef0")

    with pytest.raises(PlacementError) as caught:
        deploy(private, default_route=None, subnet_has_own_route_table=own_table)
    confirmed = deploy(
        make_settings(subnet_id="subnet-0123456789abcdef0", subnet_reaches_aws=True),
        default_route=None,
        subnet_has_own_route_table=own_table,
    )

    (line,) = str(caught.value).splitlines()
    assert "has no route to an internet or NAT gateway" in line
    assert "pulumi config set trainguard:subnetReachesAws true" in line
    # Reached at its private address: no Elastic IP, which could not work without an internet gateway.
    assert confirmed.of_type(EIP) == []
    assert confirmed.outputs["ssh_commands"] == [f"ssh ubuntu@{_private(confirmed)}"]


def test_a_subnet_behind_a_nat_gateway_is_used_at_private_addresses(deploy, make_settings) -> None:
    deployment = deploy(
        make_settings(subnet_id="subnet-0123456789abcdef0"), default_route={"natGatewayId": "nat-0123456789abcdef0"}
    )

    assert deployment.of_type(EIP) == []
    assert deployment.outputs["ssh_commands"] == [f"ssh ubuntu@{_private(deployment)}"]


def _private(deployment) -> str:
    return str(deployment.one(INSTANCE).outputs["privateIp"])


def test_data_volume_is_encrypted_gp3_kept_and_tagged_for_snapshots(deploy) -> None:
    deployment = deploy()
    volume = deployment.one(VOLUME).inputs
    volume_id = deployment.one(VOLUME).id
    attachment = deployment.one("aws:ec2/volumeAttachment:VolumeAttachment").inputs

    assert (volume["type"], volume["encrypted"], volume["size"]) == ("gp3", True, 200)
    assert volume["availabilityZone"] == "eu-west-1a"
    assert volume["tags"]["trainguard:snapshot"] == "true"
    assert attachment["volumeId"] == volume_id
    assert attachment["instanceId"] == deployment.outputs["instance_ids"][0]
    # Not on the instance's block device list: terminating the instance leaves it.
    assert "ebsBlockDevices" not in deployment.one(INSTANCE).inputs


def test_ssh_is_open_only_to_the_allowed_cidrs_and_the_canary(deploy) -> None:
    deployment = deploy()
    group = deployment.named("trainguard-ssh-sg")

    rules = [
        r.inputs
        for r in deployment.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == group.id
    ]
    assert "ingress" not in group.inputs  # no inline rules to fight the separate ones
    assert all((r["ipProtocol"], r["fromPort"], r["toPort"]) == ("tcp", 22, 22) for r in rules)
    sources = sorted(r.get("cidrIpv4") or r.get("cidrIpv6") or r["referencedSecurityGroupId"] for r in rules)
    assert sources == ["2001:db8::/48", "203.0.113.0/24", deployment.named("trainguard-canary-sg").id]


def test_instance_profile_has_exactly_the_agent_ssm_and_its_own_results_prefix(deploy) -> None:
    deployment = deploy()
    instance_id = deployment.outputs["instance_ids"][0]

    attached = sorted(
        a.inputs["policyArn"] for a in deployment.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    )
    assert attached == [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
    ]
    results = json.loads(deployment.named("trainguard-node-0-results").inputs["policy"])
    write, listing = results["Statement"]
    assert write["Resource"] == f"arn:aws:s3:::trainguard-results-20261129/{instance_id}/*"
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [f"{instance_id}/", f"{instance_id}/*"]


def test_user_data_writes_the_instance_env_and_applies_the_bundle(deploy) -> None:
    deployment = deploy()
    user_data = deployment.one(INSTANCE).inputs["userData"]

    assert user_data.startswith("#cloud-config\n")
    assert f"TRAINGUARD_DATA_VOLUME_ID={deployment.one(VOLUME).id}\n" in user_data
    assert "TRAINGUARD_BUCKET=trainguard-results-20261129" in user_data
    assert "TRAINGUARD_REGION=eu-west-1" in user_data
    assert "/usr/local/sbin/trainguard-apply" in user_data


def test_results_bucket_is_private_versioned_encrypted_tls_only_and_kept(deploy) -> None:
    deployment = deploy()

    block = deployment.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    versioning = deployment.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    encryption = deployment.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    rules = {
        rule["id"]: rule
        for rule in deployment.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    }
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    # every object; the provider deprecates an empty filter
    assert rules["expire-noncurrent-versions"]["filter"] == {"prefix": ""}
    (statement,) = json.loads(deployment.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])["Statement"]
    assert (statement["Effect"], statement["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})


@pytest.mark.parametrize("days", [None, 7])
def test_post_mortem_files_expire_with_the_evidence_retention(deploy, make_settings, days: int | None) -> None:
    deployment = deploy(make_settings(**({"evidence_retain_days": days} if days else {})))

    rules = deployment.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    (postmortems,) = [rule for rule in rules if rule["filter"] == {"prefix": "postmortem/"}]
    assert (postmortems["status"], postmortems["expiration"]) == ("Enabled", {"days": days or 21})
    (variables,) = [
        f.inputs["environment"]["variables"]
        for f in deployment.of_type("aws:lambda/function:Function")
        if f.inputs["handler"].endswith("auto_reboot.handler")
    ]
    assert variables["TRAINGUARD_EVIDENCE_RETAIN_DAYS"] == str(days or 21)


def test_alert_topic_is_encrypted_with_one_email_subscription_per_address(deploy) -> None:
    deployment = deploy()

    topic = deployment.one("aws:sns/topic:Topic").inputs
    key = deployment.one("aws:kms/key:Key").inputs
    assert topic["kmsMasterKeyId"].startswith("arn:aws:kms:")
    assert key["enableKeyRotation"] is True
    key_policy = json.loads(key["policy"])
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in key_policy["Statement"])
    subscriptions = [s.inputs for s in deployment.of_type("aws:sns/topicSubscription:TopicSubscription")]
    assert sorted((s["protocol"], s["endpoint"]) for s in subscriptions) == [
        ("email", "lead@example.com"),
        ("email", "oncall@example.com"),
    ]


def _alarms(deployment) -> dict[str, dict]:
    """The first instance's alarms, by key."""
    prefix = "trainguard-node-0-alarms-"
    return {a.name.removeprefix(prefix): a.inputs for a in deployment.of_type(ALARM) if a.name.startswith(prefix)}


def test_alarms_watch_cpu_memory_disk_and_status_checks_with_email_on_alarm_and_ok(deploy) -> None:
    deployment = deploy()
    instance_id = deployment.outputs["instance_ids"][0]
    topic = deployment.outputs["topic_arn"]
    alarms = _alarms(deployment)

    assert set(alarms) == {
        "cpu",
        "memory",
        "memory-pressure",
        "disk-root",
        "disk-data",
        "system-status",
        "instance-status",
        "ssh-unresponsive",
        "agent-heartbeat",
    }
    for key, alarm in alarms.items():
        assert alarm["name"] == f"trainguard-test-{instance_id}-{key}"
        assert alarm["dimensions"]["InstanceId"] == instance_id
        assert topic in alarm["alarmActions"]
        assert alarm["okActions"] == [topic]
    cpu, memory = alarms["cpu"], alarms["memory"]
    assert (cpu["metricName"], cpu["threshold"], cpu["period"] * cpu["evaluationPeriods"]) == (
        "CPUUtilization",
        95,
        900,
    )
    assert cpu["period"] == 300  # basic monitoring's 5-minute metrics
    assert cpu["alarmActions"] == [topic]  # email only
    assert (memory["namespace"], memory["metricName"], memory["threshold"]) == ("CWAgent", "mem_used_percent", 90)
    assert memory["period"] * memory["evaluationPeriods"] == 300
    assert "how the incident's freeze began" in memory["alarmDescription"]
    assert alarms["disk-root"]["dimensions"] == {"InstanceId": instance_id, "path": "/"}
    assert alarms["disk-data"]["dimensions"] == {"InstanceId": instance_id, "path": "/data"}
    assert alarms["disk-data"]["threshold"] == 90
    system, status = alarms["system-status"], alarms["instance-status"]
    assert (system["metricName"], system["period"], system["evaluationPeriods"]) == ("StatusCheckFailed_System", 60, 2)
    assert (status["metricName"], status["period"], status["evaluationPeriods"]) == (
        "StatusCheckFailed_Instance",
        60,
        3,
    )
    function = deployment.named("trainguard-auto-reboot-function")
    assert status["alarmActions"] == [topic, f"arn:aws:lambda:eu-west-1:123456789012:{function.id}"]


def test_alarm_descriptions_say_what_it_means_what_was_done_and_what_next(deploy) -> None:
    alarms = _alarms(deploy())

    for key, alarm in alarms.items():
        text = alarm["alarmDescription"]
        assert "trainguard" in text, key
        assert "trainguard probe i-" in text or "aws ec2" in text, key
        assert len(text) <= 1024, key


def test_system_status_recovers_where_the_type_can_and_emails_where_it_cannot(deploy) -> None:
    recoverable = _alarms(deploy(auto_recovery=True))["system-status"]
    not_recoverable = _alarms(deploy(auto_recovery=False))["system-status"]

    assert recoverable["alarmActions"][1] == "arn:aws:automate:eu-west-1:ec2:recover"
    assert "asked EC2 to recover" in recoverable["alarmDescription"]
    assert len(not_recoverable["alarmActions"]) == 1
    assert "cannot recover it automatically" in not_recoverable["alarmDescription"]


def test_thresholds_come_from_config(deploy, make_settings) -> None:
    alarms = _alarms(deploy(make_settings(cpu_alarm_percent=80, memory_alarm_percent=70, disk_alarm_percent=60)))

    assert (alarms["cpu"]["threshold"], alarms["memory"]["threshold"], alarms["disk-root"]["threshold"]) == (80, 70, 60)
    assert "above 70%" in alarms["memory"]["alarmDescription"]


def test_a_fleet_repeats_every_per_instance_resource(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=3))

    assert len(deployment.of_type(INSTANCE)) == 3
    assert len(deployment.of_type(VOLUME)) == 3
    assert len(deployment.of_type("aws:ec2/volumeAttachment:VolumeAttachment")) == 3
    assert len(deployment.of_type("aws:iam/instanceProfile:InstanceProfile")) == 3
    assert len(deployment.of_type(ALARM)) == 3 * 9 + 1  # and the canary's own
    assert len(set(deployment.outputs["instance_ids"])) == 3
    assert len(deployment.of_type("aws:sns/topic:Topic")) == 1
    assert len(deployment.of_type("aws:dlm/lifecyclePolicy:LifecyclePolicy")) == 1


def test_snapshot_policy_targets_tagged_data_volumes_on_the_configured_schedule(deploy, make_settings) -> None:
    deployment = deploy(make_settings(snapshot_interval_hours=6, snapshot_retain_count=8))
    policy = deployment.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").inputs

    details = policy["policyDetails"]
    assert details["targetTags"] == {"trainguard:snapshot": "true"}
    (schedule,) = details["schedules"]
    assert schedule["createRule"]["interval"] == 6 and schedule["createRule"]["intervalUnit"] == "HOURS"
    assert schedule["retainRule"]["count"] == 8
    assert policy["executionRoleArn"].startswith("arn:aws:iam:")


def test_dashboard_shows_every_instance(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    body = json.loads(deployment.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])

    titles = [widget["properties"]["title"] for widget in body["widgets"]]
    for instance_id in deployment.outputs["instance_ids"]:
        for graph in ("CPU", "Memory", "Disk", "GPU", "Status checks"):
            assert any(t.startswith(f"{instance_id} {graph}") for t in titles), (instance_id, graph)
    assert deployment.outputs["dashboard_url"].endswith("#dashboards:name=trainguard-test")


def test_exports_give_a_person_everything_to_reach_each_instance(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    outputs = deployment.outputs

    assert set(outputs) == {
        "instance_ids",
        "public_ips",
        "ssh_commands",
        "ssh_config",
        "probe_commands",
        "bucket_name",
        "topic_arn",
        "dashboard_url",
        "detection_budget_seconds",
        "monitoring_cost_usd_month",
        "cost_usd_month",
        "cost_items_usd_month",
        "region",
        "stack",
        "bundle_version",
        "auto_reboot_function_name",
        "canary_function_name",
        "dlm_policy_id",
    }
    first, second = outputs["instance_ids"]
    # A laptop whose default region is another one still finds the instance.
    assert outputs["probe_commands"] == [
        f"trainguard probe {first} --region eu-west-1",
        f"trainguard probe {second} --region eu-west-1",
    ]
    assert outputs["ssh_commands"] == [f"ssh ubuntu@{ip}" for ip in outputs["public_ips"]]
    assert outputs["bucket_name"] == "trainguard-results-20261129"
    assert outputs["topic_arn"].startswith("arn:aws:sns:")


def test_exports_name_every_piece_trainguard_status_looks_for(deploy) -> None:
    deployment = deploy()
    outputs = deployment.outputs

    assert (outputs["region"], outputs["stack"]) == ("eu-west-1", "test")
    upload = deployment.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
    assert upload["key"] == f"trainguard/bundle/{outputs['bundle_version']}.tar.gz"
    functions = {f.inputs["handler"]: f.outputs["name"] for f in deployment.of_type("aws:lambda/function:Function")}
    assert outputs["auto_reboot_function_name"] == functions["healthcheck.lambdas.auto_reboot.handler"]
    assert outputs["canary_function_name"] == functions["healthcheck.lambdas.ssh_canary.handler"]
    assert outputs["dlm_policy_id"] == deployment.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").id


def test_each_instance_keeps_its_address_across_a_stop_start_with_an_elastic_ip(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    without = deploy(make_settings(elastic_ips=False))

    addresses = deployment.of_type(EIP)
    instance_ids = deployment.outputs["instance_ids"]
    assert sorted(a.inputs["instance"] for a in addresses) == sorted(instance_ids)
    assert all(a.inputs["domain"] == "vpc" and a.inputs["tags"]["trainguard:stack"] == "test" for a in addresses)
    # The exported addresses are the Elastic IPs, not the automatic ones a stop/start would change.
    assert sorted(deployment.outputs["public_ips"]) == sorted(a.outputs["publicIp"] for a in addresses)
    assert without.of_type(EIP) == []
    assert without.outputs["public_ips"] == [without.one(INSTANCE).outputs["publicIp"]]


def test_the_ssh_config_snippet_names_each_instance_by_stack_and_index(deploy, make_settings) -> None:
    outputs = deploy(make_settings(instance_count=2)).outputs
    first, second = outputs["instance_ids"]
    ip_first, ip_second = outputs["public_ips"]

    assert outputs["ssh_config"] == (
        f"Host trainguard-test-0\n    HostName {ip_first}\n    User ubuntu\n"
        f"    # {first} in eu-west-1: trainguard probe {first} --region eu-west-1\n"
        "\n"
        f"Host trainguard-test-1\n    HostName {ip_second}\n    User ubuntu\n"
        f"    # {second} in eu-west-1: trainguard probe {second} --region eu-west-1\n"
    )


def test_the_alarm_emails_name_the_region_in_every_command(deploy) -> None:
    for key, alarm in _alarms(deploy()).items():
        commands = re.findall(r"trainguard (?:probe|reboot) i-[0-9a-f]+[^.;]*", alarm["alarmDescription"])
        assert all("--region eu-west-1" in command for command in commands), (key, commands)


def test_a_kept_results_bucket_keeps_everything_that_protects_it(deploy) -> None:
    """`pulumi destroy` leaves the bucket, and with it its TLS-only policy, public-access block and lifecycle."""
    options = deploy().mocks.options

    kept = {name for name, opts in options.items() if name.startswith("trainguard-results-") and opts.retain_on_delete}
    assert kept == {
        "trainguard-results-bucket",
        "trainguard-results-public-access",
        "trainguard-results-ownership",
        "trainguard-results-versioning",
        "trainguard-results-encryption",
        "trainguard-results-lifecycle",
        "trainguard-results-policy",
    }


def test_the_guard_may_email_through_the_topic_and_never_speak_for_the_canary(deploy) -> None:
    deployment = deploy()
    statements = {
        s["Sid"]: s for s in json.loads(deployment.named("trainguard-node-0-guard").inputs["policy"])["Statement"]
    }
    topic = deployment.outputs["topic_arn"]

    assert statements["TellAPerson"] == {
        "Sid": "TellAPerson",
        "Effect": "Allow",
        "Action": "sns:Publish",
        "Resource": topic,
    }
    # The mocks name a resource's ARN after its id: the topic's own key, no other.
    assert statements["UseTheTopicKey"]["Resource"] == "arn:aws:kms:eu-west-1:123456789012:trainguard-alerts-key-id"
    # The agent's managed policy allows any PutMetricData: the canary's namespace is denied explicitly, so no
    # process on the instance can publish SSHResponsive=1 for itself or a neighbour.
    deny = statements["NotTheCanarysMetrics"]
    assert (deny["Effect"], deny["Action"]) == ("Deny", "cloudwatch:PutMetricData")
    assert deny["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Trainguard"}}
    assert len(statements) == 3
