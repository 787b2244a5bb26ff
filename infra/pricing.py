"""What trainguard adds to the bill per month, item by item, from one price table (pure).

Prices are AWS's public list prices in USD for us-east-1 as of 2026, without
free tiers (they are per account, and other work uses them); other regions
differ by a few percent. The instances and their volumes are not counted: a
training instance costs them with or without trainguard.

Monitoring (MONITORING_ITEMS), and why each count is what it is:
- alarms: 7 standard per instance, memory pressure's high-resolution one, the
  SSH canary's (high resolution only below a 60 s canary interval: at 60 s it
  is a standard alarm), and the canary's own errors alarm;
- custom metrics, each billed whole per month: the agent's mem_used_percent,
  disk_used_percent for / and /data as collected (dimensions InstanceId, path,
  fstype) and rolled up by (InstanceId, path) for the alarms, and two GPU
  measurements per GPU; the canary's SSHResponsive; memory pressure (PSI some
  and full, through the agent's StatsD). The guard's WorkerOOMKills is sent
  only when the kernel kills a worker, and custom metrics are billed by the
  hour in which they are sent, so it is not a monthly cost. Nothing is
  collected that no alarm or graph uses;
- EC2 detailed monitoring: off. Its 1-minute EC2 metrics are billed as 7
  custom metrics per instance, and only the CPU email used them; that alarm
  now reads the free 5-minute metrics over the same 15 minutes. Status
  checks are 1-minute either way, and no detection path uses CPU;
- PutMetricData requests: the agent's one a minute per instance; the canary's
  one per invocation while every instance answers (zeros go at once, which is
  rare, and not counted);
- the canary Lambda: 128 MB, one invocation a minute, alive from its start to
  its last slot (on average half an interval to the first slot, then the
  rest of the minute's slots, then the probe and publish);
- the one interface endpoint (CloudWatch), per hour in one zone;
- the KMS key of the alert topic; the dashboard; the canary's log lines.

What the watch keeps and what the design relies on, with the assumptions
named (ASSUMED_*):
- the data volumes' DLM snapshots: at most every block of the volume once
  (incremental snapshots keep only changed blocks; blocks rewritten while a
  retained snapshot holds their old copy add to this, so a volume rewritten
  every hour can cost more);
- a remediation's snapshots, kept evidenceRetainDays: each copies the root
  volume whole (an upper bound; the data volume's copy is incremental to DLM's
  snapshots), at ASSUMED_REMEDIATIONS_PER_INSTANCE_MONTH;
- the results bucket's noncurrent versions, kept 30 days: ASSUMED_REWRITTEN_GB
  of results overwritten per instance a month;
- the public IPv4 address every instance needs to be reached by SSH: AWS bills
  each public IPv4 address by the hour, an attached Elastic IP and the
  automatic public address alike.
The auto-reboot function (a few invocations a month and one sweep a day) and
the post-mortem files (kilobytes each) cost less than a cent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.components.results import NONCURRENT_VERSION_DAYS
from infra.detection import Detection

HOURS_PER_MONTH = 730
MINUTES_PER_MONTH = HOURS_PER_MONTH * 60
DAYS_PER_MONTH = 30

PRICES_USD = {
    "standard_alarm_month": 0.10,
    "high_resolution_alarm_month": 0.30,
    "custom_metric_month": 0.30,
    "put_metric_data_per_1000_requests": 0.01,
    "lambda_arm64_gb_second": 0.0000133334,
    "lambda_per_million_requests": 0.20,
    "interface_endpoint_hour": 0.01,
    "dashboard_month": 3.00,
    "kms_key_month": 1.00,
    "log_ingestion_gb": 0.50,
    "snapshot_gb_month": 0.05,
    "s3_standard_gb_month": 0.023,
    "public_ipv4_hour": 0.005,
}

# Per instance: cpu, memory, disk /, disk /data, system status, instance status, agent heartbeat.
STANDARD_ALARMS_PER_INSTANCE = 7
PRESSURE_ALARMS_PER_INSTANCE = 1  # PSI full avg10, 10-second periods: high resolution
STANDARD_ALARMS_PER_STACK = 1  # the canary's own errors
# CloudWatch bills an alarm as high resolution when its period is under 60 s.
HIGH_RESOLUTION_BELOW_S = 60
# mem_used_percent; disk_used_percent for 2 paths as collected and rolled up by (InstanceId, path); SSHResponsive;
# PSI some and full.
CUSTOM_METRICS_PER_INSTANCE = 1 + 2 * 2 + 1 + 2
GPU_METRICS_PER_GPU = 2  # utilization_gpu and memory_used, the dashboard's
DETAILED_MONITORING = False
EC2_DETAILED_METRICS = 7  # what detailed monitoring bills per instance, as custom metrics
AGENT_REQUESTS_PER_MINUTE = 1
CANARY_MEMORY_GB = 0.125
CANARY_WORK_S = 1.0  # probe a healthy fleet and publish, after the last slot
INTERFACE_ENDPOINTS = 1  # monitoring, for the canary inside the VPC
CANARY_LOG_BYTES_PER_INVOCATION = 600  # Lambda's START/END/REPORT lines and the canary's summary
ASSUMED_REMEDIATIONS_PER_INSTANCE_MONTH = 1
ASSUMED_REWRITTEN_GB_PER_INSTANCE_MONTH = 10

MONITORING_ITEMS = (
    "alarms",
    "custom_metrics",
    "detailed_monitoring",
    "put_metric_data",
    "canary_lambda",
    "interface_endpoints",
    "kms_key",
    "dashboard",
    "logs",
)


@dataclass(frozen=True)
class Fleet:
    """What the bill depends on: the stack's size and settings."""

    instances: int
    gpus_per_instance: int
    detection: Detection = field(default_factory=Detection)
    root_volume_gib: int = 100
    data_volume_gib: int = 200
    evidence_retain_days: int = 21


def canary_seconds_per_invocation(detection: Detection) -> float:
    """How long one invocation lives: to the first slot, the minute's other slots, the last probe."""
    interval = detection.canary_interval_s
    return interval / 2 + (detection.samples_per_minute - 1) * interval + CANARY_WORK_S


def alarms_per_instance(detection: Detection) -> tuple[int, int]:
    """(standard, high-resolution) alarms per instance: the SSH alarm's period is the canary interval."""
    ssh_high_resolution = detection.canary_interval_s < HIGH_RESOLUTION_BELOW_S
    return (
        STANDARD_ALARMS_PER_INSTANCE + (0 if ssh_high_resolution else 1),
        PRESSURE_ALARMS_PER_INSTANCE + (1 if ssh_high_resolution else 0),
    )


def cost_items(fleet: Fleet) -> dict[str, float]:
    """USD per month, per billed item (see the module docstring for what each counts)."""
    p = PRICES_USD
    n = fleet.instances
    invocations = MINUTES_PER_MONTH
    standard, high_resolution = alarms_per_instance(fleet.detection)
    metrics = n * (CUSTOM_METRICS_PER_INSTANCE + GPU_METRICS_PER_GPU * fleet.gpus_per_instance)
    requests = MINUTES_PER_MONTH * n * AGENT_REQUESTS_PER_MINUTE + invocations
    evidence_share = fleet.evidence_retain_days / DAYS_PER_MONTH
    return {
        "alarms": n * (standard * p["standard_alarm_month"] + high_resolution * p["high_resolution_alarm_month"])
        + STANDARD_ALARMS_PER_STACK * p["standard_alarm_month"],
        "custom_metrics": metrics * p["custom_metric_month"],
        "detailed_monitoring": n * EC2_DETAILED_METRICS * p["custom_metric_month"] * DETAILED_MONITORING,
        "put_metric_data": requests / 1000 * p["put_metric_data_per_1000_requests"],
        "canary_lambda": invocations
        * (
            canary_seconds_per_invocation(fleet.detection) * CANARY_MEMORY_GB * p["lambda_arm64_gb_second"]
            + p["lambda_per_million_requests"] / 1e6
        ),
        "interface_endpoints": INTERFACE_ENDPOINTS * HOURS_PER_MONTH * p["interface_endpoint_hour"],
        "kms_key": p["kms_key_month"],
        "dashboard": p["dashboard_month"],
        "logs": invocations * CANARY_LOG_BYTES_PER_INVOCATION / 1e9 * p["log_ingestion_gb"],
        "dlm_snapshots": n * fleet.data_volume_gib * p["snapshot_gb_month"],
        "remediation_snapshots": n
        * ASSUMED_REMEDIATIONS_PER_INSTANCE_MONTH
        * fleet.root_volume_gib
        * p["snapshot_gb_month"]
        * evidence_share,
        "noncurrent_versions": n
        * ASSUMED_REWRITTEN_GB_PER_INSTANCE_MONTH
        * p["s3_standard_gb_month"]
        * NONCURRENT_VERSION_DAYS
        / DAYS_PER_MONTH,
        "public_ipv4": n * HOURS_PER_MONTH * p["public_ipv4_hour"],
    }


def monitoring_cost_usd_month(fleet: Fleet) -> float:
    """The monitoring items' total (MONITORING_ITEMS), rounded to cents."""
    items = cost_items(fleet)
    return round(sum(items[name] for name in MONITORING_ITEMS), 2)


def cost_usd_month(fleet: Fleet) -> float:
    """Every item's total, rounded to cents."""
    return round(sum(cost_items(fleet).values()), 2)
