"""What `trainguard status` looks at, read from AWS in a few batched calls (the edge), as immutable facts.

For the whole stack: one paginated DescribeInstances and one DescribeInstanceStatus, one paginated
DescribeAlarms (the stack's alarms, by name), one GetMetricData for every instance's canary samples, agent
datapoints and the guard's kills, the topic's subscriptions, the auto-reboot function's configuration and the
snapshot policy. Then per instance, all at once: the SSH banner, State Manager's association status and the
bucket's listing. A fact that cannot be read is recorded as such (`unavailable`, with why), never raised: the
judgement decides what its absence means. Only failing to list the instances raises, since nothing can be
judged then.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from healthcheck import contract, metric_data
from healthcheck.guard.workers import WorkerRecord
from healthcheck.metric_data import Points
from healthcheck.probe.stages import BannerCheck, check_banner
from healthcheck.remediation.policy import Entry, RemediationConfigError, RemediationSettings, decode_history

BANNER_TIMEOUT_S = 5.0
SSH_PORT = 22
# The canary samples every 10 s and the agent every 60 s: their newest datapoints are read from this far back.
METRICS_LOOKBACK = timedelta(minutes=30)
# The guard's kills are counted over this window.
KILLS_WINDOW = timedelta(hours=6)
# Instances looked at at once: a frozen one costs its banner check's whole timeout, so all at once (up to 32).
PARALLEL = 32
# A results listing stops here (20 pages): the newest result of a bigger one is the newest among these.
MAX_LISTED = 20_000
MAX_RECORD_BYTES = 1 << 20
# DescribeInstanceStatus takes at most 100 instance ids a call.
STATUS_IDS_PER_CALL = 100
BUNDLE_IN_COMMAND = re.compile(re.escape(contract.BUNDLE_PREFIX) + r"/([0-9a-f]+)\.tar\.gz")
LIVE_STATES = ("pending", "running", "stopping", "stopped")

T = TypeVar("T")


@dataclass(frozen=True)
class Subscription:
    protocol: str
    endpoint: str
    confirmed: bool


@dataclass(frozen=True)
class Alarm:
    name: str
    key: str  # what follows the instance id (ssh-unresponsive, ...), or the stack prefix for a stack alarm
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    since: datetime | None
    reason: str
    metric: str  # Namespace/MetricName


@dataclass(frozen=True)
class Association:
    status: str  # State Manager's Success, Failed, Pending, InProgress...
    at: datetime | None
    bundle_version: str | None


@dataclass(frozen=True)
class Function:
    """The auto-reboot function as Lambda describes it, with the settings its environment gives."""

    name: str
    state: str  # Active, Pending, Inactive, Failed
    settings: RemediationSettings


@dataclass(frozen=True)
class Results:
    """What the bucket holds of the instance: when the last push ended, the newest result overall and per worker
    folder, and the guard's record of the workers."""

    last_push_at: datetime | None  # the push record's time; None before the first push that wrote one
    newest_at: datetime | None
    newest_per_worker: dict[str, datetime] = field(default_factory=dict)
    workers: tuple[WorkerRecord, ...] | None = None  # None where no record was pushed (or it is unreadable)
    listed_all: bool = True  # False when the listing stopped at MAX_LISTED objects


@dataclass(frozen=True)
class InstanceFacts:
    instance_id: str
    name: str
    state: str
    system_status: str
    instance_status: str
    public_ip: str | None
    private_ip: str | None
    tags: dict[str, str]
    alarms: tuple[Alarm, ...] = ()
    banner: BannerCheck | None = None  # None where it was not looked at: not running, or no address
    canary_latest: tuple[datetime, float] | None = None
    agent_latest: datetime | None = None
    kills_recent: int | None = None
    association: Association | None = None
    results: Results | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # fact -> why it could not be read

    @property
    def history(self) -> tuple[Entry, ...]:
        return decode_history(self.tags.get(contract.HISTORY_TAG_KEY))


@dataclass(frozen=True)
class StackFacts:
    stack: str
    region: str
    at: datetime
    topic_arn: str | None
    subscriptions: tuple[Subscription, ...] | None
    bundle_version: str | None
    dlm_state: str | None
    function: Function | None
    stack_alarms: tuple[Alarm, ...]
    instances: tuple[InstanceFacts, ...]
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sources:
    """Where the stack's pieces are: from the stack's outputs where Pulumi answered, else found by name."""

    stack: str
    bucket: str | None = None
    topic_arn: str | None = None
    bundle_version: str | None = None
    dlm_policy_id: str | None = None
    function_name: str | None = None
    instance_ids: tuple[str, ...] = ()


class Clients:
    """The AWS clients status uses, each made on first use by `make(service)`: `clients.ec2`, and
    `clients.awslambda` for Lambda (a Python keyword)."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()  # the instances' threads share one client per service

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        with self._lock:
            if attribute not in self._made:
                self._made[attribute] = self._make(attribute.removeprefix("aws"))
            return self._made[attribute]


def _attempt(what: str, unavailable: dict[str, str], read: Callable[[], T]) -> T | None:
    """`read()`, or None with why in `unavailable`: status shows what it could read and says what it could not,
    whatever went wrong (AWS refusing, a service moto lacks, an answer of an unexpected shape)."""
    try:
        return read()
    except Exception as error:  # noqa: BLE001 (the boundary that keeps one unreadable fact from ending status)
        unavailable[what] = f"{type(error).__name__}: {error}"[:300]
        return None


def gather(sources: Sources, clients: Clients, region: str, now: datetime) -> StackFacts:
    """Every fact status shows. Failing to list the instances raises: nothing can be judged then."""
    unavailable: dict[str, str] = {}
    instances = _instances(clients.ec2, sources)
    prefix = contract.stack_alarm_prefix(sources.stack)
    alarms = _attempt("alarms", unavailable, lambda: _alarms(clients.cloudwatch, prefix)) or []
    actions = _actions_of(alarms)
    topic = sources.topic_arn or next((arn for arn in actions if ":sns:" in arn), None)
    function_name = sources.function_name or next((arn for arn in actions if ":lambda:" in arn), None)
    subscriptions = (
        _attempt("email subscriptions", unavailable, lambda: _subscriptions(clients.sns, topic)) if topic else None
    )
    function = (
        _attempt("the auto-reboot function", unavailable, lambda: _function(clients.awslambda, function_name))
        if function_name
        else None
    )
    # A stack found by name has its bucket named in the auto-reboot function's settings.
    bucket = sources.bucket or (function.settings.bucket if function else None)
    dlm_id = sources.dlm_policy_id
    dlm_state = _attempt("snapshots", unavailable, lambda: _dlm_state(clients.dlm, dlm_id)) if dlm_id else None
    ids = [str(instance["InstanceId"]) for instance in instances]
    metrics = _attempt("metrics", unavailable, lambda: _metrics(clients.cloudwatch, ids, now)) or {}

    def one(instance: dict[str, Any]) -> InstanceFacts:
        return _instance_facts(instance, alarms, metrics, sources.stack, bucket, clients, now)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        facts = tuple(pool.map(one, instances))
    stack_alarm_names = {contract.stack_alarm_name(sources.stack, contract.CANARY_ERRORS_ALARM_KEY)}
    return StackFacts(
        stack=sources.stack,
        region=region,
        at=now,
        topic_arn=topic,
        subscriptions=subscriptions,
        bundle_version=sources.bundle_version,
        dlm_state=dlm_state,
        function=function,
        stack_alarms=tuple(alarm for alarm, _ in alarms if alarm.name in stack_alarm_names),
        instances=facts,
        unavailable=unavailable,
    )


def _instances(ec2: Any, sources: Sources) -> list[dict[str, Any]]:
    """The stack's instances (by id where the outputs name them, else by the stack tag), with their checks."""
    paginator = ec2.get_paginator("describe_instances")
    if sources.instance_ids:
        pages = paginator.paginate(InstanceIds=list(sources.instance_ids))
    else:
        pages = paginator.paginate(
            Filters=[
                {"Name": f"tag:{contract.STACK_TAG_KEY}", "Values": [sources.stack]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )
    found = [instance for page in pages for group in page["Reservations"] for instance in group["Instances"]]
    ids = [str(instance["InstanceId"]) for instance in found]
    checks: dict[str, Any] = {}
    for first in range(0, len(ids), STATUS_IDS_PER_CALL):
        answer = ec2.describe_instance_status(
            InstanceIds=ids[first : first + STATUS_IDS_PER_CALL], IncludeAllInstances=True
        )
        checks.update({status["InstanceId"]: status for status in answer["InstanceStatuses"]})
    for instance in found:
        status = checks.get(instance["InstanceId"], {})
        instance["_system"] = status.get("SystemStatus", {}).get("Status", "unknown")
        instance["_instance"] = status.get("InstanceStatus", {}).get("Status", "unknown")
    return sorted(found, key=lambda instance: str(instance["InstanceId"]))


def _alarms(cloudwatch: Any, prefix: str) -> list[tuple[Alarm, tuple[str, ...]]]:
    """The alarms named with the stack's prefix, each with its actions."""
    alarms = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        for alarm in page.get("MetricAlarms", []):
            name = str(alarm["AlarmName"])
            described = Alarm(
                name=name,
                key=contract.alarm_key(name) or name.removeprefix(prefix),
                state=str(alarm.get("StateValue", "")),
                since=alarm.get("StateUpdatedTimestamp"),
                reason=str(alarm.get("StateReason", "")),
                metric=f"{alarm.get('Namespace', '')}/{alarm.get('MetricName', '')}",
            )
            alarms.append((described, tuple(str(action) for action in alarm.get("AlarmActions", []))))
    return alarms


def _actions_of(alarms: Sequence[tuple[Alarm, tuple[str, ...]]]) -> list[str]:
    """What the stack's alarms act on (its topic, the auto-reboot function), for a stack found by name only."""
    return [action for _, actions in alarms for action in actions if action.startswith("arn:")]


def _subscriptions(sns: Any, topic_arn: str) -> tuple[Subscription, ...]:
    found = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for subscription in page.get("Subscriptions", []):
            arn = str(subscription.get("SubscriptionArn", ""))
            found.append(
                Subscription(
                    protocol=str(subscription.get("Protocol", "")),
                    endpoint=str(subscription.get("Endpoint", "")),
                    # Until the person clicks the link, AWS gives the word PendingConfirmation instead of an ARN.
                    confirmed=arn.startswith("arn:"),
                )
            )
    return tuple(found)


def _function(awslambda: Any, name_or_arn: str) -> Function:
    configuration = awslambda.get_function_configuration(FunctionName=name_or_arn)
    environment = configuration.get("Environment", {}).get("Variables", {})
    try:
        settings = RemediationSettings.from_environment(environment)
    except RemediationConfigError:
        settings = RemediationSettings()
    return Function(str(configuration["FunctionName"]), str(configuration.get("State", "Active")), settings)


def _dlm_state(dlm: Any, policy_id: str) -> str:
    return str(dlm.get_lifecycle_policy(PolicyId=policy_id)["Policy"]["State"])


def _metrics(cloudwatch: Any, instance_ids: list[str], now: datetime) -> dict[str, dict[str, Points]]:
    """Every instance's canary samples, agent datapoints and the guard's kills, newest first: one GetMetricData
    call for up to 166 instances."""
    wanted = (
        ("canary", contract.CANARY_NAMESPACE, contract.SSH_RESPONSIVE_METRIC, 10, "Minimum"),
        ("agent", contract.AGENT_NAMESPACE, contract.MEMORY_METRIC, 60, "SampleCount"),
        ("kills", contract.GUARD_NAMESPACE, contract.OOM_KILLS_METRIC, 3600, "Sum"),
    )
    queries = [
        metric_data.instance_query(f"{name}{index}", namespace, metric, instance_id, period, stat)
        for index, instance_id in enumerate(instance_ids)
        for name, namespace, metric, period, stat in wanted
    ]
    series = metric_data.newest_first(cloudwatch, queries, now - max(METRICS_LOOKBACK, KILLS_WINDOW), now)
    return {
        instance_id: {name: series[f"{name}{index}"] for name, *_ in wanted}
        for index, instance_id in enumerate(instance_ids)
    }


def _instance_facts(
    instance: dict[str, Any],
    alarms: Sequence[tuple[Alarm, tuple[str, ...]]],
    metrics: Mapping[str, dict[str, Points]],
    stack: str,
    bucket: str | None,
    clients: Clients,
    now: datetime,
) -> InstanceFacts:
    instance_id = str(instance["InstanceId"])
    tags = {str(tag["Key"]): str(tag["Value"]) for tag in instance.get("Tags", [])}
    unavailable: dict[str, str] = {}
    own_prefix = contract.instance_alarm_name(stack, instance_id, "")
    own = tuple(alarm for alarm, _ in alarms if alarm.name.startswith(own_prefix))
    series = metrics.get(instance_id, {})
    canary = series.get("canary") or []
    agent = [(at, count) for at, count in series.get("agent") or [] if count > 0 and now - at <= METRICS_LOOKBACK]
    kills = series.get("kills")
    state = str(instance["State"]["Name"])
    address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
    banner = check_banner(str(address), SSH_PORT, BANNER_TIMEOUT_S) if state == "running" and address else None
    association = _attempt("the bundle's apply", unavailable, lambda: _association(clients.ssm, instance_id))
    results = _attempt("results", unavailable, lambda: _results(clients.s3, bucket, instance_id)) if bucket else None
    return InstanceFacts(
        instance_id=instance_id,
        name=tags.get("Name", ""),
        state=state,
        system_status=str(instance.get("_system", "unknown")),
        instance_status=str(instance.get("_instance", "unknown")),
        public_ip=instance.get("PublicIpAddress"),
        private_ip=instance.get("PrivateIpAddress"),
        tags=tags,
        alarms=own,
        banner=banner,
        canary_latest=canary[0] if canary else None,
        agent_latest=agent[0][0] if agent else None,
        kills_recent=int(sum(value for at, value in kills if now - at <= KILLS_WINDOW)) if kills is not None else None,
        association=association,
        results=results,
        unavailable=unavailable,
    )


def _association(ssm: Any, instance_id: str) -> Association | None:
    """The newest State Manager run on the instance, and the bundle version its association applies."""
    statuses = ssm.describe_instance_associations_status(InstanceId=instance_id).get("InstanceAssociationStatusInfos")
    if not statuses:
        return None
    newest = max(statuses, key=lambda status: status.get("ExecutionDate") or datetime.min)
    version = None
    described = ssm.describe_association(AssociationId=newest["AssociationId"])["AssociationDescription"]
    for command in described.get("Parameters", {}).get("commands", []):
        match = BUNDLE_IN_COMMAND.search(str(command))
        version = match.group(1) if match else version
    return Association(str(newest.get("Status", "")), newest.get("ExecutionDate"), version)


def _results(s3: Any, bucket: str, instance_id: str) -> Results:
    """The instance's push record, its newest result overall and per worker folder, and the guard's record."""
    prefix = f"{instance_id}/"
    push_record, workers_record = f"{prefix}{contract.PUSH_RECORD_NAME}", f"{prefix}{contract.WORKERS_STATE_NAME}"
    last_push: datetime | None = None
    newest: datetime | None = None
    per_worker: dict[str, datetime] = {}
    listed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key, modified = str(item["Key"]), item["LastModified"]
            if key == push_record:
                last_push = modified
            if key in (push_record, workers_record):
                continue
            newest = max(newest, modified) if newest else modified
            folder, _, rest = key[len(prefix) :].partition("/")
            if folder.startswith(contract.WORKER_DIR_PREFIX) and rest:
                per_worker[folder] = max(per_worker.get(folder, modified), modified)
        listed += len(page.get("Contents", []))
        if listed >= MAX_LISTED:
            break
    return Results(last_push, newest, per_worker, _workers(s3, bucket, workers_record), listed < MAX_LISTED)


def _workers(s3: Any, bucket: str, key: str) -> tuple[WorkerRecord, ...] | None:
    """The guard's record of the workers, pushed with the results; None where there is none (or it is unreadable)."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_RECORD_BYTES)
    except ClientError:
        return None
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        return None
    workers = record.get("workers") if isinstance(record, dict) else None
    if not isinstance(workers, list):
        return None
    known = {field.name for field in fields(WorkerRecord)}
    found = []
    for worker in workers:
        try:
            found.append(WorkerRecord(**{name: value for name, value in worker.items() if name in known}))
        except (AttributeError, TypeError):  # not an object, or a field missing
            continue
    return tuple(found)
