"""What `trainguard status` looks at, read from AWS in a few batched calls (the edge), as immutable facts.

For the whole stack: DescribeInstances and DescribeInstanceStatus, the stack's alarms (by name), two
GetMetricData calls for every instance's canary samples, agent datapoints (the last 30 minutes) and the
guard's kills (the last 6 hours), the topic's subscriptions, the auto-reboot function's configuration and the
snapshot policy. Then per instance, all at once in threads that never hold the process: the SSH banner, State
Manager's association status and the bucket's listing, within one deadline.

A fact that cannot be read is recorded as such (`unavailable`: what, and why), never raised: the judgement
decides what its absence means. Only failing to list the instances raises, since nothing can be judged then.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from healthcheck import contract, metric_data
from healthcheck.guard.workers import STATES, WorkerRecord
from healthcheck.metric_data import Points
from healthcheck.probe.stages import BannerCheck, check_banner
from healthcheck.remediation.policy import Entry, RemediationConfigError, RemediationSettings, decode_history
from healthcheck.threads import DaemonThreads

BANNER_TIMEOUT_S = 5.0
SSH_PORT = 22
# The canary samples every 10 s and the agent every 60 s: their newest datapoints are read from this far back.
# (Within 3 hours, where CloudWatch still answers for a 10-second period.)
METRICS_LOOKBACK = timedelta(minutes=30)
# The guard's kills are counted over this window, in hours (a period CloudWatch answers for that far back).
KILLS_WINDOW = timedelta(hours=6)
# Instances looked at at once: a frozen one costs its banner check's whole timeout, so all at once (up to 32).
PARALLEL = 32
# What each instance's own reads (banner, State Manager, the bucket) may take in all.
INSTANCE_DEADLINE_S = 30.0
# A results listing stops here (20 pages): the newest result of a bigger one is the newest among these.
MAX_LISTED = 20_000
MAX_RECORD_BYTES = 1 << 20
# DescribeInstanceStatus takes at most 100 instance ids a call.
STATUS_IDS_PER_CALL = 100
BUNDLE_IN_COMMAND = re.compile(re.escape(contract.BUNDLE_PREFIX) + r"/([0-9a-f]+)\.tar\.gz")
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# What `unavailable` names, where the judgement looks for it.
ALARMS, METRICS, SUBSCRIPTIONS, SSH, BUNDLE, RESULTS = (
    "alarms",
    "metrics",
    "email subscriptions",
    "ssh",
    "bundle",
    "results",
)
EPOCH = datetime.min.replace(tzinfo=timezone.utc)

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
    since: datetime | None  # when it last changed state
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
    banner: BannerCheck | None = None  # None where it was not looked at: not running, no address, no time
    canary_latest: tuple[datetime, float] | None = None
    agent_latest: datetime | None = None
    kills_recent: int | None = None
    association: Association | None = None
    results: Results | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # what could not be read -> why

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
    missing: tuple[str, ...] = ()  # instance ids the stack's outputs name that EC2 no longer knows
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
    ids = [str(instance["InstanceId"]) for instance in instances]
    prefix = contract.stack_alarm_prefix(sources.stack)
    listed = _attempt(ALARMS, unavailable, lambda: _alarms(clients.cloudwatch, prefix)) or []
    # A prefix also matches a longer stack's alarms (trainguard-dev- and trainguard-dev-2-...): only this stack's
    # instances' alarms and its own stack alarms count, and only their actions name its topic and function.
    stack_alarm_names = {contract.stack_alarm_name(sources.stack, contract.CANARY_ERRORS_ALARM_KEY)}
    instance_prefixes = tuple(contract.instance_alarm_name(sources.stack, iid, "") for iid in ids)
    alarms = [(alarm, actions) for alarm, actions in listed if alarm.name.startswith(instance_prefixes)]
    actions = [action for _, acting in alarms for action in acting if action.startswith("arn:")]
    topic = sources.topic_arn or next((arn for arn in actions if ":sns:" in arn), None)
    function_name = sources.function_name or next((arn for arn in actions if ":lambda:" in arn), None)
    subscriptions = _attempt(SUBSCRIPTIONS, unavailable, lambda: _subscriptions(clients.sns, topic)) if topic else None
    function = (
        _attempt("the auto-reboot function", unavailable, lambda: _function(clients.awslambda, function_name))
        if function_name
        else None
    )
    # A stack found by name has its bucket named in the auto-reboot function's settings.
    bucket = sources.bucket or (function.settings.bucket if function else None)
    dlm_id = sources.dlm_policy_id
    dlm_state = _attempt("snapshots", unavailable, lambda: _dlm_state(clients.dlm, dlm_id)) if dlm_id else None
    metrics = _attempt(METRICS, unavailable, lambda: _metrics(clients.cloudwatch, ids, now))
    own_alarms = [alarm for alarm, _ in alarms]

    def slow(instance: dict[str, Any]) -> InstanceFacts:
        return _instance_facts(instance, own_alarms, metrics, sources.stack, bucket, clients, now)

    return StackFacts(
        stack=sources.stack,
        region=region,
        at=now,
        topic_arn=topic,
        subscriptions=subscriptions,
        bundle_version=sources.bundle_version,
        dlm_state=dlm_state,
        function=function,
        stack_alarms=tuple(alarm for alarm, _ in listed if alarm.name in stack_alarm_names),
        instances=_each_by_deadline(instances, slow, own_alarms, metrics, sources.stack, now),
        missing=tuple(iid for iid in sources.instance_ids if iid not in ids),
        unavailable=unavailable,
    )


def _each_by_deadline(
    instances: list[dict[str, Any]],
    slow: Callable[[dict[str, Any]], InstanceFacts],
    alarms: list[Alarm],
    metrics: Mapping[str, dict[str, Points]] | None,
    stack: str,
    now: datetime,
) -> tuple[InstanceFacts, ...]:
    """`slow(instance)` for every instance at once, within INSTANCE_DEADLINE_S in all; an instance not done by
    then (or whose reads failed outright) is shown with what needs no call of its own, and says why the rest is
    missing. Ctrl-C abandons the threads at once."""
    pool = DaemonThreads(max_workers=PARALLEL, name="status")
    try:
        futures: list[Future[InstanceFacts]] = [pool.submit(slow, instance) for instance in instances]
        deadline = time.monotonic() + INSTANCE_DEADLINE_S
        facts = []
        for instance, future in zip(instances, futures, strict=True):
            try:
                facts.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except Exception as error:  # noqa: BLE001 (late, or failed: either way the instance is still shown)
                why = f"no answer within {INSTANCE_DEADLINE_S:g} s" if isinstance(error, FutureTimeout) else str(error)
                missed = dict.fromkeys((SSH, BUNDLE, RESULTS), why)
                facts.append(_instance_facts(instance, alarms, metrics, stack, None, None, now, late=missed))
        return tuple(facts)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _instances(ec2: Any, sources: Sources) -> list[dict[str, Any]]:
    """The stack's instances (those its outputs name, else those with its tag), with their status checks.

    Ids are filtered on, not asked for: one the outputs name that EC2 no longer knows leaves the rest readable.
    """
    wanted = (
        {"Name": "instance-id", "Values": list(sources.instance_ids)}
        if sources.instance_ids
        else {"Name": f"tag:{contract.STACK_TAG_KEY}", "Values": [sources.stack]}
    )
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[wanted])
    found = [
        instance
        for page in pages
        for group in page.get("Reservations", [])
        for instance in group.get("Instances", [])
        if sources.instance_ids or instance.get("State", {}).get("Name") in LIVE_STATES
    ]
    ids = [str(instance["InstanceId"]) for instance in found]
    checks: dict[str, Any] = {}
    for first in range(0, len(ids), STATUS_IDS_PER_CALL):
        answer = ec2.describe_instance_status(
            InstanceIds=ids[first : first + STATUS_IDS_PER_CALL], IncludeAllInstances=True
        )
        checks.update({status["InstanceId"]: status for status in answer.get("InstanceStatuses", [])})
    for instance in found:
        status = checks.get(instance["InstanceId"], {})
        instance["_system"] = status.get("SystemStatus", {}).get("Status", "unknown")
        instance["_instance"] = status.get("InstanceStatus", {}).get("Status", "unknown")
    return sorted(found, key=lambda instance: str(instance["InstanceId"]))


def _alarms(cloudwatch: Any, prefix: str) -> list[tuple[Alarm, tuple[str, ...]]]:
    """The alarms named with the prefix, each with its ALARM actions."""
    alarms = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        for alarm in page.get("MetricAlarms", []):
            name = str(alarm["AlarmName"])
            described = Alarm(
                name=name,
                key=contract.alarm_key(name) or name.removeprefix(prefix),
                state=str(alarm.get("StateValue", "")),
                since=alarm.get("StateTransitionedTimestamp") or alarm.get("StateUpdatedTimestamp"),
                reason=str(alarm.get("StateReason", "")),
                metric=f"{alarm.get('Namespace', '')}/{alarm.get('MetricName', '')}",
            )
            alarms.append((described, tuple(str(action) for action in alarm.get("AlarmActions", []))))
    return alarms


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
    """Every instance's canary samples and agent datapoints (one call for up to 250 instances), and the guard's
    kills (one call for up to 500): two windows, since CloudWatch answers for a 10-second period only within
    the last 3 hours."""
    recent = (
        ("canary", contract.CANARY_NAMESPACE, contract.SSH_RESPONSIVE_METRIC, 10, "Minimum"),
        ("agent", contract.AGENT_NAMESPACE, contract.MEMORY_METRIC, 60, "SampleCount"),
    )
    hours = (("kills", contract.GUARD_NAMESPACE, contract.OOM_KILLS_METRIC, 3600, "Sum"),)
    series: dict[str, Points] = {}
    for wanted, lookback in ((recent, METRICS_LOOKBACK), (hours, KILLS_WINDOW)):
        queries = [
            metric_data.instance_query(f"{name}{index}", namespace, metric, instance_id, period, stat)
            for index, instance_id in enumerate(instance_ids)
            for name, namespace, metric, period, stat in wanted
        ]
        series |= metric_data.newest_first(cloudwatch, queries, now - lookback, now)
    return {
        instance_id: {name: series[f"{name}{index}"] for name in ("canary", "agent", "kills")}
        for index, instance_id in enumerate(instance_ids)
    }


def _instance_facts(
    instance: dict[str, Any],
    alarms: Sequence[Alarm],
    metrics: Mapping[str, dict[str, Points]] | None,
    stack: str,
    bucket: str | None,
    clients: Clients | None,
    now: datetime,
    late: Mapping[str, str] | None = None,
) -> InstanceFacts:
    """One instance's facts: with `clients`, its own reads too (banner, State Manager, bucket); without, `late`
    says why they were not made."""
    instance_id = str(instance["InstanceId"])
    tags = {str(tag.get("Key")): str(tag.get("Value")) for tag in instance.get("Tags", [])}
    unavailable: dict[str, str] = dict(late or {})
    own_prefix = contract.instance_alarm_name(stack, instance_id, "")
    series = (metrics or {}).get(instance_id, {})
    canary = series.get("canary") or []
    agent = [(at, count) for at, count in series.get("agent") or [] if count > 0]
    kills = series.get("kills")
    state = str(instance.get("State", {}).get("Name", "unknown"))
    address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
    banner = association = results = None
    if clients is not None:
        if state == "running" and address:
            banner = check_banner(str(address), SSH_PORT, BANNER_TIMEOUT_S)
        association = _attempt(BUNDLE, unavailable, lambda: _association(clients.ssm, instance_id, stack))
        if bucket:
            results = _attempt(RESULTS, unavailable, lambda: _results(clients.s3, bucket, instance_id))
    return InstanceFacts(
        instance_id=instance_id,
        name=tags.get("Name", ""),
        state=state,
        system_status=str(instance.get("_system", "unknown")),
        instance_status=str(instance.get("_instance", "unknown")),
        public_ip=instance.get("PublicIpAddress"),
        private_ip=instance.get("PrivateIpAddress"),
        tags=tags,
        alarms=tuple(alarm for alarm in alarms if alarm.name.startswith(own_prefix)),
        banner=banner,
        canary_latest=canary[0] if canary else None,
        agent_latest=agent[0][0] if agent else None,
        kills_recent=int(sum(value for at, value in kills if now - at <= KILLS_WINDOW)) if kills is not None else None,
        association=association,
        results=results,
        unavailable=unavailable,
    )


def _association(ssm: Any, instance_id: str, stack: str) -> Association | None:
    """The newest run of the stack's bundle association on the instance, and the version it applies (another
    tool's associations on the instance are not the stack's business)."""
    statuses = ssm.describe_instance_associations_status(InstanceId=instance_id).get("InstanceAssociationStatusInfos")
    ours = [
        status
        for status in statuses or []
        if str(status.get("AssociationName", "")).endswith(f"{contract.BUNDLE_ASSOCIATION_INFIX}{stack}")
    ]
    if not ours:
        return None
    newest = max(ours, key=lambda status: status.get("ExecutionDate") or EPOCH)
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
    """The guard's record of the workers, pushed with the results; None where there is none (or it is unreadable).
    Each worker's entry is taken only when every field has its type: the bucket is written by the instance."""
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
    return tuple(found for found in map(_worker_record, workers) if found is not None)


def _worker_record(entry: object) -> WorkerRecord | None:
    if not isinstance(entry, dict):
        return None
    known = {described.name: described for described in fields(WorkerRecord)}
    values = {name: value for name, value in entry.items() if name in known}
    whole = ("worker", "exit_status", "memory_peak_bytes", "memory_max_bytes")
    for name, value in values.items():
        optional = known[name].default is None
        if optional and value is None:
            continue
        if name in whole and (not isinstance(value, int) or isinstance(value, bool)):
            return None
        if name not in whole and not isinstance(value, str):
            return None
    if values.get("state") not in STATES:
        return None
    try:
        return WorkerRecord(**values)
    except TypeError:  # a field it must have is missing
        return None
