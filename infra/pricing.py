"""What the monitoring costs per month, item by item, from one price table (pure).

Prices are AWS's public list prices in USD for us-east-1 as of 2026, without
free tiers (they are per account, and other work uses them); other regions
differ by a few percent. Compute, storage and data transfer of the instances
themselves are not monitoring and are not counted.

What is billed, and why each count is what it is:
- alarms: 7 standard per instance, 2 high-resolution (the SSH canary's and
  memory pressure's), and the canary's own errors alarm;
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
"""

from __future__ import annotations

from infra.detection import Detection

HOURS_PER_MONTH = 730
MINUTES_PER_MONTH = HOURS_PER_MONTH * 60

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
}

# Per instance: cpu, memory, disk /, disk /data, system status, instance status, agent heartbeat.
STANDARD_ALARMS_PER_INSTANCE = 7
HIGH_RESOLUTION_ALARMS_PER_INSTANCE = 2  # SSH responsive and memory pressure, 10-second periods
STANDARD_ALARMS_PER_STACK = 1  # the canary's own errors
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


def canary_seconds_per_invocation(detection: Detection) -> float:
    """How long one invocation lives: to the first slot, the minute's other slots, the last probe."""
    interval = detection.canary_interval_s
    return interval / 2 + (detection.samples_per_minute - 1) * interval + CANARY_WORK_S


def monitoring_cost_items(instances: int, gpus_per_instance: int, detection: Detection) -> dict[str, float]:
    """USD per month, per billed item (see the module docstring for what each counts)."""
    p = PRICES_USD
    invocations = MINUTES_PER_MONTH
    metrics = instances * (CUSTOM_METRICS_PER_INSTANCE + GPU_METRICS_PER_GPU * gpus_per_instance)
    requests = MINUTES_PER_MONTH * instances * AGENT_REQUESTS_PER_MINUTE + invocations
    return {
        "alarms": instances
        * (
            STANDARD_ALARMS_PER_INSTANCE * p["standard_alarm_month"]
            + HIGH_RESOLUTION_ALARMS_PER_INSTANCE * p["high_resolution_alarm_month"]
        )
        + STANDARD_ALARMS_PER_STACK * p["standard_alarm_month"],
        "custom_metrics": metrics * p["custom_metric_month"],
        "detailed_monitoring": instances * EC2_DETAILED_METRICS * p["custom_metric_month"] * DETAILED_MONITORING,
        "put_metric_data": requests / 1000 * p["put_metric_data_per_1000_requests"],
        "canary_lambda": invocations
        * (
            canary_seconds_per_invocation(detection) * CANARY_MEMORY_GB * p["lambda_arm64_gb_second"]
            + p["lambda_per_million_requests"] / 1e6
        ),
        "interface_endpoints": INTERFACE_ENDPOINTS * HOURS_PER_MONTH * p["interface_endpoint_hour"],
        "kms_key": p["kms_key_month"],
        "dashboard": p["dashboard_month"],
        "logs": invocations * CANARY_LOG_BYTES_PER_INVOCATION / 1e9 * p["log_ingestion_gb"],
    }


def monitoring_cost_usd_month(instances: int, gpus_per_instance: int, detection: Detection) -> float:
    """The total of monitoring_cost_items, rounded to cents."""
    return round(sum(monitoring_cost_items(instances, gpus_per_instance, detection).values()), 2)
