"""The auto-reboot function as the stack declares it, and its zip as Pulumi would build it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from healthcheck.lambdas.auto_reboot import TIMEOUT_S
from healthcheck.remediation.events import parse
from infra.lambda_package import AUTO_REBOOT_HANDLER, LAMBDA_LEAVES_OUT, package_files

AUTO_REBOOT = "trainguard-auto-reboot-function"
STOPPED_RULE = "trainguard-auto-reboot-stopped"
MAX_ZIP_BYTES = 100 * 1024
# What the Lambda Python runtime brings: boto3 and what it needs.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def test_function_runs_python_312_on_arm64_for_its_time_budget_with_its_own_logs(deploy) -> None:
    deployment = deploy()
    function = deployment.named(AUTO_REBOOT).inputs
    logs = deployment.named("trainguard-auto-reboot-logs")

    assert (function["runtime"], function["architectures"]) == ("python3.12", ["arm64"])
    # The handler plans its evidence against this timeout: the two must be the same number.
    assert function["timeout"] == TIMEOUT_S
    assert function["handler"] == AUTO_REBOOT_HANDLER
    assert function["loggingConfig"]["logGroup"] == logs.name  # the mocks name it as AWS would name it
    assert logs.inputs["retentionInDays"] == 30
    variables = function["environment"]["variables"]
    assert variables["TRAINGUARD_TOPIC_ARN"] == deployment.outputs["topic_arn"]
    assert variables["TRAINGUARD_BUCKET"] == deployment.outputs["bucket_name"]
    assert variables["TRAINGUARD_MANAGED_TAG"] == "trainguard:managed=true"
    assert (variables["TRAINGUARD_MAX_REBOOTS"], variables["TRAINGUARD_BOOT_GRACE_SECONDS"]) == ("3", "600")


def test_function_stays_inside_lambda_limits(deploy) -> None:
    function = deploy().named(AUTO_REBOOT).inputs

    assert 1 <= function["timeout"] <= 900
    assert 128 <= function["memorySize"] <= 10240
    assert len(json.dumps(function["environment"]["variables"])) < 4096


def test_retries_are_explicit_and_failures_go_to_the_topic(deploy) -> None:
    deployment = deploy()
    config = deployment.named("trainguard-auto-reboot-invoke-config").inputs

    assert config["maximumRetryAttempts"] == 2
    assert config["destinationConfig"]["onFailure"]["destination"] == deployment.outputs["topic_arn"]


def test_role_reboots_stops_and_starts_only_managed_instances(deploy) -> None:
    document = json.loads(deploy().named("trainguard-auto-reboot-role-policy").inputs["policy"])
    statements = {s["Sid"]: s for s in document["Statement"]}

    recover = statements["RecoverManagedInstances"]
    assert {"ec2:RebootInstances", "ec2:StopInstances", "ec2:StartInstances"} <= set(recover["Action"])
    assert recover["Condition"] == {"StringEquals": {"ec2:ResourceTag/trainguard:managed": "true"}}
    assert recover["Resource"] == "arn:aws:ec2:eu-west-1:123456789012:instance/*"
    actions_anywhere = {
        action
        for s in document["Statement"]
        if "Condition" not in s
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert not actions_anywhere & {"ec2:RebootInstances", "ec2:StopInstances", "ec2:StartInstances"}
    assert statements["KeepPostMortems"]["Resource"] == "arn:aws:s3:::trainguard-results-20261129/postmortem/*"
    assert statements["TellAPerson"]["Resource"].startswith("arn:aws:sns:")
    assert statements["WriteOwnLogs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statements["UseTheTopicKey"]["Resource"].startswith("arn:aws:kms:")


def test_freeze_alarms_invoke_the_function_through_one_permission_scoped_to_them(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    function = deployment.named(AUTO_REBOOT)
    function_arn = f"arn:aws:lambda:eu-west-1:123456789012:{function.id}"
    alarms = {a.name: a for a in deployment.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    (permission,) = [
        p.inputs
        for p in deployment.of_type("aws:lambda/permission:Permission")
        if p.inputs["principal"] == "lambda.alarms.cloudwatch.amazonaws.com"
    ]

    invoking = sorted(name for name, alarm in alarms.items() if function_arn in alarm.inputs["alarmActions"])
    assert invoking == [
        f"trainguard-node-{node}-alarms-{key}"
        for node in (0, 1)
        for key in ("agent-heartbeat", "instance-status", "ssh-unresponsive")
    ]
    prefix = permission["sourceArn"].removesuffix("*")
    assert prefix == "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:trainguard-test-i-"
    assert all(
        f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{alarms[n].inputs['name']}".startswith(prefix)
        for n in invoking
    )
    assert not deployment.named("trainguard-canary-errors").inputs["name"].startswith(prefix.rsplit(":", 1)[1])
    assert (permission["sourceAccount"], permission["action"]) == ("123456789012", "lambda:InvokeFunction")


def test_stopped_instances_reach_the_function_through_eventbridge(deploy) -> None:
    deployment = deploy()
    rule = deployment.named(STOPPED_RULE).inputs
    target = deployment.named("trainguard-auto-reboot-stopped-target").inputs
    permission = deployment.named("trainguard-auto-reboot-stopped-permission").inputs

    assert json.loads(rule["eventPattern"])["detail"] == {"state": ["stopped"]}
    assert target["arn"].startswith("arn:aws:lambda:")
    assert permission["sourceArn"] == f"arn:aws:cloudwatch:eu-west-1:123456789012:{deployment.named(STOPPED_RULE).id}"


def test_expired_evidence_is_swept_once_a_day_and_only_remediation_snapshots_may_go(deploy) -> None:
    deployment = deploy()
    rule = deployment.named("trainguard-auto-reboot-sweep")
    target = deployment.named("trainguard-auto-reboot-sweep-target").inputs
    permission = deployment.named("trainguard-auto-reboot-sweep-permission").inputs
    statements = {
        s["Sid"]: s
        for s in json.loads(deployment.named("trainguard-auto-reboot-role-policy").inputs["policy"])["Statement"]
    }

    assert rule.inputs["scheduleExpression"] == "rate(1 day)"
    assert parse(json.loads(target["input"]))[0][0].__class__.__name__ == "SweepEvent"
    assert permission["sourceArn"] == f"arn:aws:cloudwatch:eu-west-1:123456789012:{rule.id}"
    expire = statements["ExpireRemediationSnapshots"]
    assert (expire["Action"], expire["Resource"]) == ("ec2:DeleteSnapshot", "arn:aws:ec2:eu-west-1::snapshot/*")
    assert expire["Condition"] == {"StringEquals": {"ec2:ResourceTag/trainguard:source": "remediation"}}
    assert "ec2:DescribeSnapshots" in statements["ReadInstances"]["Action"]


def test_destroy_and_a_shrinking_fleet_invoke_the_function_to_delete_their_claims(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    invocation = deployment.one("aws:lambda/invocation:Invocation")
    options = deployment.mocks.options[invocation.name]
    claims = {
        s["Sid"]: s
        for s in json.loads(deployment.named("trainguard-auto-reboot-role-policy").inputs["policy"])["Statement"]
    }["ClaimInstances"]

    assert invocation.inputs["lifecycleScope"] == "CRUD"  # invoked on destroy too, with tf.action = delete
    assert invocation.inputs["functionName"] == deployment.outputs["auto_reboot_function_name"]
    payload = json.loads(invocation.inputs["input"])
    (change,), problems = parse({**payload, "tf": {"action": "delete", "prev_input": payload}})
    assert problems == [] and sorted(change.gone) == sorted(deployment.outputs["instance_ids"])
    # Destroyed first, while the function and what it may do still exist.
    assert {resource._name for resource in options.depends_on} >= {  # type: ignore[union-attr]
        "trainguard-auto-reboot-function",
        "trainguard-auto-reboot-role-policy",
    }
    assert "ssm:GetParametersByPath" in claims["Action"]
    assert claims["Resource"] == [
        "arn:aws:ssm:eu-west-1:123456789012:parameter/trainguard/claims",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/trainguard/claims/*",
    ]


def _build_zip(tmp_path: Path) -> Path:
    """The archive Pulumi builds from the function's AssetArchive: the same names, the same files."""
    archive = tmp_path / "auto_reboot.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, path in package_files(LAMBDA_LEAVES_OUT).items():
            bundle.write(path, name)
    return archive


def _runtime_site(tmp_path: Path) -> Path:
    """A site directory with only what the Lambda runtime provides (boto3), linked from this venv."""
    site = tmp_path / "runtime-site"
    site.mkdir()
    for package in RUNTIME_PACKAGES:
        module = __import__(package)
        source = Path(module.__file__).parent if module.__file__.endswith("__init__.py") else Path(module.__file__)
        (site / source.name).symlink_to(source)
    return site


def test_handlers_import_from_the_zip_without_paramiko_or_tenacity(tmp_path: Path) -> None:
    archive = _build_zip(tmp_path)
    site = _runtime_site(tmp_path)
    probe = (
        "import sys\n"
        "import healthcheck.lambdas.auto_reboot as module\n"
        "assert module.__file__.startswith(sys.argv[1]), module.__file__\n"
        "assert 'paramiko' not in sys.modules\n"
        "assert callable(module.handler)\n"
        "try:\n"
        "    import paramiko\n"
        "except ImportError:\n"
        "    print('paramiko absent')\n"
        "print(module.handler({}, None, remediator=object())['ignored'])\n"
        "import healthcheck.lambdas.ssh_canary as canary\n"
        "assert 'paramiko' not in sys.modules and 'tenacity' not in sys.modules\n"
        "print(canary.handler.__name__)\n"
    )

    # -I -S: no environment, no site-packages; only the zip and the runtime's boto3 are importable.
    rerun = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(archive)!r}, {str(site)!r}]\n" + probe,
            str(archive),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines() == ["paramiko absent", "['unknown event with keys []']", "handler"]


def test_the_zip_is_small(tmp_path: Path) -> None:
    size = _build_zip(tmp_path).stat().st_size

    assert size < MAX_ZIP_BYTES, f"{size} bytes"
