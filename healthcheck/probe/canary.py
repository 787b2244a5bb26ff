"""What the stack's SSH canary, inside the instances' VPC, heard from an instance, and what its SSH alarm says.

When an instance's port is silent from here while EC2 calls it healthy, this
tells a frozen sshd (the canary hears nothing either) from an address the
security group drops (the canary hears sshd answer). Read from CloudWatch,
only when a port is silent: a healthy probe never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from healthcheck import aws, contract, metric_data

# How far back the canary's samples are read, and how recent an answer must be to count: the canary samples
# every 10 s by default; two minutes spans a missed invocation.
LOOKBACK = timedelta(minutes=5)
FRESH = timedelta(minutes=2)
SAMPLE_PERIOD_S = 10


@dataclass(frozen=True)
class CanaryView:
    """The canary's newest sample of one instance, and its SSH alarm's state (None where there is none)."""

    instance_id: str
    latest_at: datetime | None = None
    latest: float | None = None  # 1: sshd sent its banner to the canary; 0: it did not
    alarm_name: str | None = None
    alarm_state: str | None = None
    alarm_since: datetime | None = None

    def heard_sshd(self, now: datetime) -> bool:
        """The canary's newest sample, recent enough to trust, says sshd answered."""
        return self.latest == 1 and self.latest_at is not None and now - self.latest_at <= FRESH

    def heard_nothing(self, now: datetime) -> bool:
        """The canary's newest sample, recent enough to trust, says sshd did not answer."""
        return self.latest == 0 and self.latest_at is not None and now - self.latest_at <= FRESH


def read_canary(cloudwatch: Any, instance_ids: list[str], now: datetime) -> dict[str, CanaryView]:
    """Every instance's newest SSHResponsive sample (one GetMetricData call) and its SSH alarm."""
    queries = [
        metric_data.instance_query(
            f"canary{index}",
            contract.CANARY_NAMESPACE,
            contract.SSH_RESPONSIVE_METRIC,
            instance_id,
            SAMPLE_PERIOD_S,
            "Minimum",
        )
        for index, instance_id in enumerate(instance_ids)
    ]
    series = metric_data.newest_first(cloudwatch, queries, now - LOOKBACK, now)
    newest = {
        instance_id: series[f"canary{index}"][0]
        for index, instance_id in enumerate(instance_ids)
        if series[f"canary{index}"]
    }
    views = {}
    for instance_id in instance_ids:
        alarms = cloudwatch.describe_alarms_for_metric(
            MetricName=contract.SSH_RESPONSIVE_METRIC,
            Namespace=contract.CANARY_NAMESPACE,
            Dimensions=[{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
        ).get("MetricAlarms", [])
        alarm = alarms[0] if alarms else {}
        at, value = newest.get(instance_id, (None, None))
        views[instance_id] = CanaryView(
            instance_id,
            at,
            value,
            alarm.get("AlarmName"),
            alarm.get("StateValue"),
            alarm.get("StateUpdatedTimestamp"),
        )
    return views


def canary_client(region: str | None, timeout: float) -> Any:
    """A CloudWatch client bounded as the probe's EC2 client is."""
    bound = max(timeout, 1.0)
    return aws.client("cloudwatch", purpose="to ask the canary", region=region, limits=aws.Limits(bound, bound, 2))
