"""SSH canary: does each managed instance's sshd still send its identification? Published every few seconds.

Handler: healthcheck.lambdas.ssh_canary.handler, invoked once a minute by an
EventBridge schedule, inside the instances' VPC. Each invocation takes
`samples` samples, one every TRAINGUARD_CANARY_INTERVAL_SECONDS, stopping early
when the Lambda's remaining time runs short. Each sample runs the probe's
banner stage (the code behind `python -m healthcheck probe --no-login`,
standard library only) against every instance at once, and publishes
Trainguard/SSHResponsive (1 or 0) and Trainguard/SSHBannerSeconds per
InstanceId at one-second resolution.

Event override, for tests and manual runs (replaces discovery):
    {"targets": [{"instance_id": "i-...", "address": "10.0.0.5", "port": 22}], "samples": 3}
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from healthcheck.probe.deadline import Deadline
from healthcheck.probe.stages import SshdBusy, StageFailed, connect, exchange_identification, resolve
from healthcheck.remediation.policy import managed_tag

NAMESPACE = "Trainguard"
DEFAULT_INTERVAL_S = 10
# A sample must be decided well inside its interval, so samples never overlap.
PROBE_SHARE_OF_INTERVAL = 0.5
# Time kept back at the end of an invocation to publish and return.
RESERVE_S = 2.0

log = logging.getLogger("trainguard.ssh_canary")
log.setLevel(logging.INFO)


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
    """Connect and read the SSH identification within `timeout`: the probe's tcp and banner stages."""
    started = clock()
    deadline = Deadline(timeout, clock)
    try:
        sock = connect(resolve(target.address, target.port, deadline), deadline)
        try:
            identification = exchange_identification(sock, deadline)
        finally:
            sock.close()
    except SshdBusy as busy:
        # sshd answered to turn us away (MaxStartups): it is alive, so the host is responsive.
        return Sample(target.instance_id, True, clock() - started, busy.detail)
    except StageFailed as failure:
        return Sample(target.instance_id, False, clock() - started, f"{failure.verdict.value}: {failure.detail}")
    return Sample(target.instance_id, True, clock() - started, identification.server_id)


def metric_data(samples: list[Sample], at: datetime) -> list[dict[str, Any]]:
    """PutMetricData entries for one sample round: high resolution, dimensioned by InstanceId only."""
    data = []
    for sample in samples:
        dimensions = [{"Name": "InstanceId", "Value": sample.instance_id}]
        data.append(
            {
                "MetricName": "SSHResponsive",
                "Dimensions": dimensions,
                "Timestamp": at,
                "Value": 1.0 if sample.responsive else 0.0,
                "Unit": "Count",
                "StorageResolution": 1,
            }
        )
        data.append(
            {
                "MetricName": "SSHBannerSeconds",
                "Dimensions": dimensions,
                "Timestamp": at,
                "Value": round(sample.seconds, 3),
                "Unit": "Seconds",
                "StorageResolution": 1,
            }
        )
    return data


class Canary:
    """One invocation's sampling loop, with its clients, clocks and sleep injectable."""

    def __init__(
        self,
        cloudwatch: Any,
        ec2: Any | None = None,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        managed_tag: tuple[str, str] = ("trainguard:managed", "true"),
        port: int = 22,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cloudwatch = cloudwatch
        self.ec2 = ec2
        self.interval = interval
        self.timeout = interval * PROBE_SHARE_OF_INTERVAL
        self.managed_tag = managed_tag
        self.port = port
        self.monotonic = monotonic
        self.now = now
        self.sleep = sleep

    def discover(self) -> list[Target]:
        """Running instances tagged managed, at their private addresses (the canary runs in their VPC)."""
        assert self.ec2 is not None, "discovery needs an EC2 client"
        key, value = self.managed_tag
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{key}", "Values": [value]}, {"Name": "instance-state-name", "Values": ["running"]}]
        )
        return [
            Target(instance["InstanceId"], instance["PrivateIpAddress"], self.port)
            for page in pages
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
            if instance.get("PrivateIpAddress")
        ]

    def run(self, targets: list[Target], samples: int, remaining_ms: Callable[[], int]) -> list[list[Sample]]:
        """Up to `samples` rounds, one per interval, while a whole round still fits in the remaining time."""
        rounds: list[list[Sample]] = []
        started = self.monotonic()
        for number in range(samples):
            slot = started + number * self.interval
            wait = slot - self.monotonic()
            if remaining_ms() / 1000 - max(wait, 0.0) < self.timeout + RESERVE_S:
                break
            if wait > 0:
                self.sleep(wait)
            at = self.now()
            with ThreadPoolExecutor(max_workers=min(64, len(targets)) or 1) as pool:
                results = list(pool.map(lambda target: banner_sample(target, self.timeout, self.monotonic), targets))
            for chunk in range(0, len(results), 500):  # PutMetricData takes 1000 entries, two per target
                self.cloudwatch.put_metric_data(
                    Namespace=NAMESPACE, MetricData=metric_data(results[chunk : chunk + 500], at)
                )
            rounds.append(results)
        return rounds


def handler(event: Any, context: Any, canary: Canary | None = None) -> dict[str, Any]:
    """Sample every managed instance (or the event's targets) and publish; raises only if it cannot publish."""
    if canary is None:
        import boto3

        canary = Canary(boto3.client("cloudwatch"), boto3.client("ec2"), **_settings(os.environ))
    event = event if isinstance(event, dict) else {}
    if "targets" in event:
        targets = [Target(t["instance_id"], t["address"], int(t.get("port", canary.port))) for t in event["targets"]]
    else:
        targets = canary.discover()
    samples = int(event.get("samples", max(1, int(60 // canary.interval))))
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
                {"event": "trainguard.canary.unresponsive", "instance_id": sample.instance_id, "detail": sample.detail}
            )
        )
    return summary


def _settings(environ: Mapping[str, str]) -> dict[str, Any]:
    return {
        "interval": float(environ.get("TRAINGUARD_CANARY_INTERVAL_SECONDS", DEFAULT_INTERVAL_S)),
        "managed_tag": managed_tag(environ),
        "port": int(environ.get("TRAINGUARD_SSH_PORT", "22")),
    }
