"""StackDashboard: one CloudWatch dashboard per stack with CPU, memory, disk, GPU and status checks per instance."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from healthcheck.guard.notify import METRIC as OOM_METRIC
from healthcheck.guard.notify import NAMESPACE as OOM_NAMESPACE
from healthcheck.guard.psi import METRIC_FULL, METRIC_SOME
from infra.agent_config import GPU_DIMENSIONS, NAMESPACE

WIDGET_WIDTH = 4  # six graphs fill the dashboard's 24-column row


def dashboard_body(instance_ids: list[str], region: str) -> dict[str, Any]:
    """A row of six graphs per instance (pure)."""
    widgets: list[dict[str, Any]] = []
    for row, iid in enumerate(instance_ids):
        graphs: list[tuple[str, list[list[Any]]]] = [
            ("CPU %", [["AWS/EC2", "CPUUtilization", "InstanceId", iid]]),
            ("Memory used %", [[NAMESPACE, "mem_used_percent", "InstanceId", iid]]),
            (
                "Memory pressure (PSI avg10 %) and workers killed",
                [
                    *(
                        [NAMESPACE, metric, "InstanceId", iid, "metric_type", "gauge", {"stat": "Maximum"}]
                        for metric in (METRIC_SOME, METRIC_FULL)
                    ),
                    [OOM_NAMESPACE, OOM_METRIC, "InstanceId", iid, {"stat": "Sum", "yAxis": "right"}],
                ],
            ),
            (
                "Disk used %",
                [
                    [NAMESPACE, "disk_used_percent", "InstanceId", iid, "path", "/"],
                    [NAMESPACE, "disk_used_percent", "InstanceId", iid, "path", "/data"],
                ],
            ),
            (
                "GPU utilisation and memory used (MiB)",
                [
                    [
                        {
                            "expression": f'SEARCH(\'{{{NAMESPACE},{",".join(GPU_DIMENSIONS)}}} InstanceId="{iid}" '
                            'MetricName=("nvidia_smi_utilization_gpu" OR "nvidia_smi_memory_used")\', \'Average\', 60)',
                            "id": "gpu",
                        }
                    ]
                ],
            ),
            (
                "Status checks failed",
                [
                    ["AWS/EC2", "StatusCheckFailed_System", "InstanceId", iid],
                    ["AWS/EC2", "StatusCheckFailed_Instance", "InstanceId", iid],
                ],
            ),
        ]
        for column, (title, metrics) in enumerate(graphs):
            widgets.append(
                {
                    "type": "metric",
                    "x": column * WIDGET_WIDTH,
                    "y": row * 6,
                    "width": WIDGET_WIDTH,
                    "height": 6,
                    "properties": {
                        "title": f"{iid} {title}",
                        "region": region,
                        "metrics": metrics,
                        "period": 60,
                        "stat": "Maximum" if title.startswith("Status") else "Average",
                        "view": "timeSeries",
                    },
                }
            )
    return {"widgets": widgets}


class StackDashboard(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        instance_ids: list[pulumi.Output[str]],
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:monitoring:StackDashboard", name, None, opts)
        dashboard_name = f"trainguard-{pulumi.get_stack()}"
        aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=dashboard_name,
            dashboard_body=pulumi.Output.all(*instance_ids).apply(
                lambda ids: json.dumps(dashboard_body(list(ids), region))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.url = pulumi.Output.from_input(
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={dashboard_name}"
        )
        self.register_outputs({"url": self.url})
