"""What the monitoring costs per month, from one price table (pure).

Prices are AWS's public list prices in USD for us-east-1 as of 2026, without
free tiers; other regions differ by a few percent. Compute, storage and data
transfer of the instances themselves are not monitoring and are not counted.
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
}

# Per instance: cpu, memory, disk /, disk /data, system status, instance status, agent heartbeat.
STANDARD_ALARMS_PER_INSTANCE = 7
HIGH_RESOLUTION_ALARMS_PER_INSTANCE = 1  # SSH responsive, 10-second periods
STANDARD_ALARMS_PER_STACK = 1  # the canary's own errors
# mem, swap, disk used for 2 paths (as collected and aggregated by path), sshd procstat x 3, canary x 2
CUSTOM_METRICS_PER_INSTANCE = 1 + 1 + 2 * 2 + 3 + 2
GPU_METRICS_PER_GPU = 5
CANARY_MEMORY_GB = 0.125
CANARY_SECONDS_PER_INVOCATION = 60
INTERFACE_ENDPOINTS = 2  # monitoring and ec2, for the canary inside the VPC


def monitoring_cost_usd_month(instances: int, gpus_per_instance: int, detection: Detection) -> float:
    """Alarms, custom metrics, metric requests, the canary Lambda, its VPC endpoints and the dashboard."""
    p = PRICES_USD
    alarms = (
        instances
        * (
            STANDARD_ALARMS_PER_INSTANCE * p["standard_alarm_month"]
            + HIGH_RESOLUTION_ALARMS_PER_INSTANCE * p["high_resolution_alarm_month"]
        )
        + STANDARD_ALARMS_PER_STACK * p["standard_alarm_month"]
    )
    metrics = instances * (CUSTOM_METRICS_PER_INSTANCE + GPU_METRICS_PER_GPU * gpus_per_instance)
    canary_rounds_per_minute = 60 / detection.canary_interval_s
    requests = MINUTES_PER_MONTH * (instances + canary_rounds_per_minute)  # agent: one a minute per instance
    canary = MINUTES_PER_MONTH * (
        CANARY_SECONDS_PER_INVOCATION * CANARY_MEMORY_GB * p["lambda_arm64_gb_second"]
        + p["lambda_per_million_requests"] / 1e6
    )
    endpoints = INTERFACE_ENDPOINTS * HOURS_PER_MONTH * p["interface_endpoint_hour"]
    total = (
        alarms
        + metrics * p["custom_metric_month"]
        + requests / 1000 * p["put_metric_data_per_1000_requests"]
        + canary
        + endpoints
        + p["dashboard_month"]
    )
    return round(total, 2)
