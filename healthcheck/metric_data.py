"""Reading instances' metrics back from CloudWatch in as few calls as AWS allows (the probe's canary cross-check
and `trainguard status`).

One GetMetricData call answers up to 500 queries, each a metric of one
instance; the answer's points come newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from healthcheck import contract

# GetMetricData's limit on queries in one request
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html).
QUERIES_PER_CALL = 500

Points = list[tuple[datetime, float]]


def instance_query(
    query_id: str, namespace: str, metric: str, instance_id: str, period: int, stat: str
) -> dict[str, Any]:
    """A query for one instance's metric (dimension InstanceId only, as trainguard publishes them)."""
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
            },
            "Period": period,
            "Stat": stat,
        },
    }


def newest_first(
    cloudwatch: Any, queries: Sequence[dict[str, Any]], start: datetime, end: datetime
) -> dict[str, Points]:
    """Each query's points, newest first, by query id: one call per QUERIES_PER_CALL queries."""
    found: dict[str, Points] = {str(query["Id"]): [] for query in queries}
    for first in range(0, len(queries), QUERIES_PER_CALL):
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=list(queries[first : first + QUERIES_PER_CALL]),
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampDescending",
        )
        for page in pages:
            for series in page.get("MetricDataResults", []):
                points = zip(series.get("Timestamps", []), series.get("Values", []), strict=False)
                found[str(series["Id"])] += [(at, float(value)) for at, value in points]
    return {query_id: sorted(points, reverse=True) for query_id, points in found.items()}
