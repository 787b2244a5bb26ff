"""AWS's documented constraints on what the stack declares: one table, each rule with its source (pure).

Mocks accept any string and any number, so a description with a character
AWS refuses, or a resource policy past its size limit, passes every mock test
and fails halfway through a real `pulumi up`. This table holds what AWS's API
references say, keyed by Pulumi resource type token and input property (in the
camelCase the engine sends; a dotted path walks into nested inputs and lists),
so that tests/infra/test_aws_rules.py checks every resource of the mocked plan,
and a new resource of a known type is checked without a new test.

Where botocore's service model carries the same limit, `api` names the
(service, operation, member path) and a test holds the table to botocore's
model, so a mistyped limit is caught too. Sources were looked up in the AWS
API references (URLs next to each rule) and botocore's models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# CloudWatch alarms: a period of 10, 20 or 30 seconds (high resolution) or a multiple of 60, and an
# evaluation window of at most one day.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
HIGH_RESOLUTION_PERIODS_S = (10, 20, 30)
MAX_EVALUATION_WINDOW_S = 86400
# The function's resource-based policy: 20 KB, fixed.
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
MAX_LAMBDA_POLICY_BYTES = 20 * 1024
# User data: 16 KB before base64.
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html
MAX_USER_DATA_BYTES = 16 * 1024

# EC2's character set for security group (and rule) descriptions.
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html
_EC2_DESCRIPTION = r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*"


@dataclass(frozen=True)
class Rule:
    """One documented constraint on one input: a string's pattern and length, or a number's range."""

    source: str
    pattern: str | None = None
    min_length: int = 0
    max_length: int | None = None
    low: int | None = None
    high: int | None = None
    allowed: tuple[int, ...] | None = None
    api: tuple[str, str, str] | None = None  # botocore (service, operation, member.path) with the same limit

    def problem(self, value: Any) -> str | None:
        """Why AWS would refuse `value`, or None."""
        if isinstance(value, str):
            if len(value) < self.min_length or (self.max_length is not None and len(value) > self.max_length):
                return f"length {len(value)} outside {self.min_length}..{self.max_length}"
            if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
                bad = sorted({c for c in value if re.fullmatch(self.pattern, c) is None})
                return f"{value!r} does not match {self.pattern}" + (f" (characters {''.join(bad)!r})" if bad else "")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number" if self.low is not None or self.allowed else None
        if self.allowed is not None and value not in self.allowed:
            return f"{value} not one of {self.allowed}"
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return f"{value} outside {self.low}..{self.high}"
        return None


def _text(source: str, *, pattern: str | None = None, low: int = 0, high: int | None = None, **kw: Any) -> Rule:
    return Rule(source=source, pattern=pattern, min_length=low, max_length=high, **kw)


_DLM = "https://docs.aws.amazon.com/dlm/latest/APIReference/API_CreateLifecyclePolicy.html"
_SG = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html"
_SG_RULE = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_IpRange.html"
_ROLE = "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html"
_FUNCTION = "https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html"
_ALARM = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"
_DASHBOARD = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutDashboard.html"
_RULE = "https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutRule.html"
_KEY = "https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateKey.html"
_ALIAS = "https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html"
_ASSOCIATION = "https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_CreateAssociation.html"
_RETENTION = "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html"
_BUCKET = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"
_INSTANCE = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html"
_IMDS = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceMetadataOptionsRequest.html"
_DEVICE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/device_naming.html"
_TARGETS = "https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_Target.html"
# The AWS-RunShellScript document's executionTimeout: its own parameter definition (aws ssm describe-document
# --name AWS-RunShellScript) allows 1 to 28800 seconds in its older versions, 172800 in the current one; the rule
# holds the stricter. The command plugin it runs is described here.
_RUN_SHELL_SCRIPT = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/documents-command-ssm-plugin-reference.html"
)

# (Pulumi resource type token, input path) -> rule.
RULES: dict[tuple[str, str], Rule] = {
    ("aws:dlm/lifecyclePolicy:LifecyclePolicy", "description"): _text(
        _DLM, pattern="[0-9A-Za-z _-]+", high=500, api=("dlm", "CreateLifecyclePolicy", "Description")
    ),
    ("aws:dlm/lifecyclePolicy:LifecyclePolicy", "policyDetails.schedules.name"): _text(
        _DLM, pattern="[0-9A-Za-z _-]+", high=120, api=("dlm", "CreateLifecyclePolicy", "PolicyDetails.Schedules.Name")
    ),
    ("aws:ec2/securityGroup:SecurityGroup", "description"): _text(_SG, pattern=_EC2_DESCRIPTION, high=255),
    ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "description"): _text(
        _SG_RULE, pattern=_EC2_DESCRIPTION, high=255
    ),
    ("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule", "description"): _text(
        _SG_RULE, pattern=_EC2_DESCRIPTION, high=255
    ),
    ("aws:iam/role:Role", "description"): _text(
        _ROLE,
        pattern="[\u0009\u000a\u000d\u0020-\u007e\u00a1-\u00ff]*",
        high=1000,
        api=("iam", "CreateRole", "Description"),
    ),
    ("aws:lambda/function:Function", "description"): _text(
        _FUNCTION, high=256, api=("lambda", "CreateFunction", "Description")
    ),
    ("aws:lambda/function:Function", "timeout"): Rule(_FUNCTION, low=1, high=900),
    ("aws:lambda/function:Function", "memorySize"): Rule(_FUNCTION, low=128, high=10240),
    ("aws:cloudwatch/metricAlarm:MetricAlarm", "name"): _text(
        _ALARM, low=1, high=255, api=("cloudwatch", "PutMetricAlarm", "AlarmName")
    ),
    ("aws:cloudwatch/metricAlarm:MetricAlarm", "alarmDescription"): _text(
        _ALARM, high=1024, api=("cloudwatch", "PutMetricAlarm", "AlarmDescription")
    ),
    ("aws:cloudwatch/metricAlarm:MetricAlarm", "period"): Rule(
        _ALARM, low=10, high=MAX_EVALUATION_WINDOW_S, allowed=(*HIGH_RESOLUTION_PERIODS_S, *range(60, 86401, 60))
    ),
    ("aws:cloudwatch/metricAlarm:MetricAlarm", "evaluationPeriods"): Rule(_ALARM, low=1, high=8640),
    ("aws:cloudwatch/dashboard:Dashboard", "dashboardName"): _text(_DASHBOARD, pattern="[A-Za-z0-9_-]+", high=255),
    # The canary's targets travel in its schedule's input.
    ("aws:cloudwatch/eventTarget:EventTarget", "input"): _text(
        _TARGETS, high=8192, api=("events", "PutTargets", "Targets.Input")
    ),
    ("aws:cloudwatch/eventRule:EventRule", "description"): _text(
        _RULE, high=512, api=("events", "PutRule", "Description")
    ),
    ("aws:kms/key:Key", "description"): _text(_KEY, high=8192, api=("kms", "CreateKey", "Description")),
    # Pulumi appends a 26-character suffix to a name prefix.
    ("aws:kms/alias:Alias", "namePrefix"): _text(_ALIAS, pattern="alias/[a-zA-Z0-9/_-]+", high=256 - 26),
    ("aws:ssm/association:Association", "associationName"): _text(
        _ASSOCIATION, pattern="[a-zA-Z0-9_.-]{3,128}", api=("ssm", "CreateAssociation", "AssociationName")
    ),
    ("aws:ssm/association:Association", "parameters.executionTimeout"): _text(
        _RUN_SHELL_SCRIPT, pattern="([1-9][0-9]{0,3})|(1[0-9]{1,4})|(2[0-7][0-9]{1,3})|(28[0-7][0-9]{1,2})|(28800)"
    ),
    ("aws:cloudwatch/logGroup:LogGroup", "retentionInDays"): Rule(
        _RETENTION,
        allowed=(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288),
    ),
    # A bucket name is 3 to 63 lowercase characters; Pulumi appends 26 to a prefix.
    ("aws:s3/bucket:Bucket", "bucketPrefix"): _text(_BUCKET, pattern="[a-z0-9][a-z0-9.-]*", high=63 - 26),
    ("aws:ec2/instance:Instance", "metadataOptions.httpPutResponseHopLimit"): Rule(_IMDS, low=1, high=64),
    # The names EC2 recommends for attached EBS volumes on Linux.
    ("aws:ec2/volumeAttachment:VolumeAttachment", "deviceName"): _text(_DEVICE, pattern="/dev/(sd|xvd)[f-p]"),
}


def _values_at(inputs: Any, path: str) -> Iterator[Any]:
    """Every value at a dotted path, walking into lists; nothing where the path is absent."""
    head, _, rest = path.partition(".")
    if isinstance(inputs, list):
        for item in inputs:
            yield from _values_at(item, path)
        return
    if not isinstance(inputs, Mapping) or head not in inputs or inputs[head] is None:
        return
    if rest:
        yield from _values_at(inputs[head], rest)
    elif isinstance(inputs[head], list):
        yield from inputs[head]
    else:
        yield inputs[head]


def violations(typ: str, inputs: Mapping[str, Any]) -> list[str]:
    """What AWS would refuse in one resource's inputs, one line per problem."""
    problems = []
    for (rule_type, path), rule in RULES.items():
        if rule_type != typ:
            continue
        for value in _values_at(inputs, path):
            problem = rule.problem(value)
            if problem is not None:
                problems.append(f"{path}: {problem} (see {rule.source})")
    if typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
        problems += alarm_timing_problems(
            inputs.get("period", 0), inputs.get("evaluationPeriods", 0), inputs.get("datapointsToAlarm")
        )
    if typ == "aws:ec2/instance:Instance" and isinstance(inputs.get("userData"), str):
        size = len(inputs["userData"].encode())
        if size > MAX_USER_DATA_BYTES:
            problems.append(f"userData: {size} bytes; EC2 accepts {MAX_USER_DATA_BYTES} (see {_INSTANCE})")
    return problems


def alarm_timing_problems(period: int, evaluation_periods: int, datapoints: int | None = None) -> list[str]:
    """Timing CloudWatch refuses: the period, the evaluation window, and M of N."""
    problems = []
    if period not in HIGH_RESOLUTION_PERIODS_S and (period <= 0 or period % 60):
        problems.append(f"alarm period {period}s: CloudWatch accepts 10, 20, 30 or a multiple of 60")
    if evaluation_periods < 1 or period * evaluation_periods > MAX_EVALUATION_WINDOW_S:
        problems.append(f"{evaluation_periods} x {period}s: the evaluation window must be 1 period to 1 day")
    if datapoints is not None and not 1 <= datapoints <= evaluation_periods:
        problems.append(f"datapoints to alarm {datapoints}: must be 1..{evaluation_periods} (the evaluation periods)")
    return problems


def lambda_policy_statement(permission: Mapping[str, Any]) -> dict[str, Any]:
    """The statement Lambda adds to the function's policy for one lambda.Permission, as AddPermission writes it."""
    condition: dict[str, Any] = {}
    if permission.get("sourceAccount"):
        condition["StringEquals"] = {"AWS:SourceAccount": permission["sourceAccount"]}
    if permission.get("sourceArn"):
        condition["ArnLike"] = {"AWS:SourceArn": permission["sourceArn"]}
    return {
        "Sid": permission.get("statementId") or "x" * 64,  # Pulumi names an unnamed one with a long unique id
        "Effect": "Allow",
        "Principal": {"Service": permission.get("principal", "")},
        "Action": permission.get("action", ""),
        "Resource": f"arn:aws:lambda:xx-xxxx-1:000000000000:function:{permission.get('function', '')}",
        "Condition": condition,
    }


def lambda_policy_bytes(permissions: Iterable[Mapping[str, Any]]) -> int:
    """The size of the resource policy the permissions build on one function, compared to its 20 KB limit."""
    statements = [lambda_policy_statement(p) for p in permissions]
    return len(json.dumps({"Version": "2012-10-17", "Id": "default", "Statement": statements}).encode())
