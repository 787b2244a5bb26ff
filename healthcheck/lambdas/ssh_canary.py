"""SSH canary: does each managed instance's sshd still send its identification? Published every few seconds.

Handler: healthcheck.lambdas.ssh_canary.handler, invoked once a minute by an
EventBridge schedule, inside the instances' VPC. The schedule's input names
the targets (the stack builds it from the instances, so the canary calls no
EC2 API):
    {"targets": [{"instance_id": "i-...", "address": "10.0.0.5", "port": 22}], "samples": 6}

Samples land on fixed wall-clock slots, every TRAINGUARD_CANARY_INTERVAL_SECONDS
(:00, :10, :20 ... for 10 s), so each one fills its own alarm period however
unevenly EventBridge starts the invocation; an invocation samples the slots of
the minute after it starts (`samples` of them), stopping early when the
Lambda's remaining time runs short. Each sample runs the probe's banner stage
(the code behind `trainguard probe --no-login`, standard library
only) against every target at once. Trainguard/SSHResponsive (1 or 0) per
InstanceId, at one-second resolution, goes to CloudWatch through the VPC
endpoint named by TRAINGUARD_MONITORING_ENDPOINT: a round with an unresponsive
target at once, healthy rounds together at the end of the invocation (one
request a minute instead of six; the alarm only waits for zeros).

A malformed event never makes the handler raise: each bad target or value is
logged and left out, and the valid targets are sampled. A wrong setting of the
function itself (an interval that is not one of INTERVALS_S, a port out of
range) publishes nothing, since an interval of 0.001 s would report every
healthy host silent and reboot it: the handler logs it and raises, so the
canary's Errors alarm emails a person.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from healthcheck import aws, contract
from healthcheck.probe.stages import check_banner

DEFAULT_INTERVAL_S = 10
# The intervals the canary samples at (infra.detection offers these): whole seconds that divide a minute, long
# enough for a banner to arrive within half of one.
INTERVALS_S = (10, 20, 30, 60)
# A sample must be decided well inside its interval, so samples never overlap.
PROBE_SHARE_OF_INTERVAL = 0.5
# Time kept back at the end of an invocation to publish and return.
RESERVE_S = 2.0
# A slot that began this long ago is still sampled now, not skipped (EventBridge fires a little late).
SLOT_GRACE_S = 1.0
# Rounds one invocation may be asked for: a manual event cannot keep the function busy for ever.
MAX_SAMPLES = 60
# PutMetricData takes at most 1000 metric data entries per request.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html
MAX_ENTRIES_PER_REQUEST = 1000
# A publish must end well inside the invocation's reserve: short timeouts, one retry.
PUBLISH_LIMITS = aws.Limits(connect_s=2.0, read_s=5.0, attempts=2)

log = logging.getLogger("trainguard.ssh_canary")
log.setLevel(logging.INFO)


class CanaryConfigError(ValueError):
    """The function's own settings are wrong; the message names the variable and what it must be."""


@dataclass(frozen=True)
class Target:
    instance_id: str
    address: str
    port: int = 22


@dataclass(frozen=True)
class Sample:
    instance_id: str
    responsive: bool
    seconds: float
    detail: str


def banner_sample(target: Target, timeout: float, clock: Callable[[], float] = time.monotonic) -> Sample:
    """Connect and read the SSH identification within `timeout`: the probe's tcp and banner stages.

    sshd turning the connection away as busy (MaxStartups) answered: it is alive, so the host is responsive.
    """
    check = check_banner(target.address, target.port, timeout, clock)
    detail = check.detail if check.alive or check.verdict is None else f"{check.verdict.value}: {check.detail}"
    return Sample(target.instance_id, check.alive, check.seconds, detail)


def metric_data(samples: list[Sample], at: datetime) -> list[dict[str, Any]]:
    """PutMetricData entries for one sample round: high resolution, dimensioned by InstanceId only."""
    return [
        {
            "MetricName": contract.SSH_RESPONSIVE_METRIC,
            "Dimensions": [{"Name": contract.INSTANCE_DIMENSION, "Value": sample.instance_id}],
            "Timestamp": at,
            "Value": 1.0 if sample.responsive else 0.0,
            "Unit": "Count",
            "StorageResolution": 1,
        }
        for sample in samples
    ]


def first_slot(now: float, interval: float) -> float:
    """The first wall-clock slot (a multiple of the interval) to sample: the next one, or one just begun."""
    return math.ceil((now - SLOT_GRACE_S) / interval) * interval


def parse_event(event: Any, default_port: int, default_samples: int) -> tuple[list[Target], int, list[str]]:
    """The valid targets and the number of rounds an event asks for, and a line for each thing left out."""
    problems: list[str] = []
    if not isinstance(event, Mapping):
        return [], default_samples, [f"the event is a {type(event).__name__}, not an object: nothing to sample"]
    raw_targets = event.get("targets")
    if not isinstance(raw_targets, list):
        problems.append(f"targets is {_shown(raw_targets)}, not a list: nothing to sample")
        raw_targets = []
    targets = []
    for index, raw in enumerate(raw_targets):
        target, problem = _target(raw, default_port)
        if problem is not None:
            problems.append(f"targets[{index}] left out: {problem}")
        elif target is not None:
            targets.append(target)
    samples = default_samples
    if "samples" in event:
        value = event["samples"]
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SAMPLES:
            samples = value
        else:
            problems.append(f"samples is {_shown(value)}, not a whole number 1 to {MAX_SAMPLES}: using {samples}")
    return targets, samples, problems


def _target(raw: Any, default_port: int) -> tuple[Target | None, str | None]:
    if not isinstance(raw, Mapping):
        return None, f"{_shown(raw)} is not an object"
    instance_id, address, port = raw.get("instance_id"), raw.get("address"), raw.get("port", default_port)
    if not isinstance(instance_id, str) or not instance_id.strip():
        return None, f"instance_id is {_shown(instance_id)}, not a non-empty string"
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address):
        return None, f"address is {_shown(address)}, not a host name or address"
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return None, f"port is {_shown(port)}, not a port number 1 to 65535"
    return Target(instance_id, address, port), None


def _shown(value: Any) -> str:
    """A bad value, short and printable, for a log line."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


class Canary:
    """One invocation's sampling loop, with its client, clocks, sleep and sampler injectable."""

    def __init__(
        self,
        cloudwatch: Any,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        port: int = 22,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sample: Callable[[Target, float, Callable[[], float]], Sample] = banner_sample,
    ) -> None:
        self.cloudwatch = cloudwatch
        self.interval = interval
        self.timeout = interval * PROBE_SHARE_OF_INTERVAL
        self.port = port
        self.wall = wall
        self.monotonic = monotonic
        self.sleep = sleep
        self.sample = sample

    @property
    def samples_per_minute(self) -> int:
        return max(1, int(60 // self.interval))

    def run(self, targets: list[Target], samples: int, remaining_ms: Callable[[], int]) -> list[list[Sample]]:
        """Up to `samples` rounds on consecutive slots, while a whole round still fits in the remaining time."""
        rounds: list[list[Sample]] = []
        healthy: list[dict[str, Any]] = []
        slot = first_slot(self.wall(), self.interval)
        for _ in range(samples):
            wait = slot - self.wall()
            if remaining_ms() / 1000 - max(wait, 0.0) < self.timeout + RESERVE_S:
                break
            if wait > 0:
                self.sleep(wait)
            with ThreadPoolExecutor(max_workers=min(64, len(targets)) or 1) as pool:
                results = list(pool.map(lambda target: self.sample(target, self.timeout, self.monotonic), targets))
            data = metric_data(results, datetime.fromtimestamp(slot, timezone.utc))
            if all(sample.responsive for sample in results):
                healthy += data  # the alarm waits only for zeros: these can go with the next request
            else:
                self._publish(healthy + data)
                healthy = []
            rounds.append(results)
            slot += self.interval
        self._publish(healthy)
        return rounds

    def _publish(self, data: list[dict[str, Any]]) -> None:
        for chunk in range(0, len(data), MAX_ENTRIES_PER_REQUEST):
            self.cloudwatch.put_metric_data(
                Namespace=contract.CANARY_NAMESPACE, MetricData=data[chunk : chunk + MAX_ENTRIES_PER_REQUEST]
            )


def handler(event: Any, context: Any, canary: Canary | None = None) -> dict[str, Any]:
    """Sample the event's targets and publish; raises only if it cannot publish, or its settings are wrong."""
    if canary is None:
        try:
            settings = _settings(os.environ)
        except CanaryConfigError as error:
            log.error(json.dumps({"event": "trainguard.canary.misconfigured", "problem": str(error)}))  # noqa: TRY400
            raise
        cloudwatch = aws.client(
            "cloudwatch",
            purpose="to publish the canary's samples",
            limits=PUBLISH_LIMITS,
            endpoint_url=os.environ.get(contract.MONITORING_ENDPOINT_VARIABLE) or None,
        )
        canary = Canary(cloudwatch, **settings)
    targets, samples, problems = parse_event(event, canary.port, canary.samples_per_minute)
    for problem in problems:
        log.warning(json.dumps({"event": "trainguard.canary.bad_input", "problem": problem}))
    if not targets:
        log.info(json.dumps({"event": "trainguard.canary", "targets": 0}))
        return {"targets": 0, "rounds": []}
    rounds = canary.run(targets, samples, context.get_remaining_time_in_millis)
    summary = {
        "targets": len(targets),
        "rounds": [{s.instance_id: s.responsive for s in round_} for round_ in rounds],
    }
    log.info(json.dumps({"event": "trainguard.canary", **summary}))
    for sample in (s for round_ in rounds for s in round_ if not s.responsive):
        log.info(
            json.dumps(
                {
                    "event": "trainguard.canary.unresponsive",
                    "instance_id": sample.instance_id,
                    "seconds": round(sample.seconds, 3),
                    "detail": sample.detail,
                }
            )
        )
    return summary


def _settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The interval and port from the environment, or CanaryConfigError naming the bad one."""
    interval = environ.get(contract.CANARY_INTERVAL_VARIABLE, str(DEFAULT_INTERVAL_S)).strip()
    if interval not in {str(allowed) for allowed in INTERVALS_S}:
        raise CanaryConfigError(
            f"{contract.CANARY_INTERVAL_VARIABLE}={interval[:20]!r}: expected one of "
            f"{', '.join(map(str, INTERVALS_S))} (seconds); nothing was published"
        )
    port = environ.get(contract.SSH_PORT_VARIABLE, "22").strip()
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise CanaryConfigError(
            f"{contract.SSH_PORT_VARIABLE}={port[:20]!r}: expected a port from 1 to 65535; nothing was published"
        )
    return {"interval": float(interval), "port": int(port)}
