"""StackDashboard: one CloudWatch dashboard per stack with CPU, memory, disk, GPU and status checks per instance."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.agent_config import DISK_PATHS, GPU_MEASUREMENTS

WIDGET_WIDTH = 4  # six graphs fill the dashboard's 24-column row
# The agent names each GPU measurement nvidia_smi_<measurement>.
GPU_METRIC_PREFIX = "nvidia_smi_"


def dashboard_name(stack: str) -> str:
    """The stack's dashboard: trainguard-<stack>."""
    return f"{contract.ALARM_NAME_PREFIX}{stack}"


def gpu_search(iid: str) -> str:
    """Every GPU of one instance, whatever dimensions the agent gives them.

    No metric schema ({namespace, dimension, ...}): a schema matches only metrics with exactly those dimensions,
    and the agent adds arch with recent drivers (agent_config), not with older ones. Exact-value terms instead.
    """
    names = " OR ".join(f'"{GPU_METRIC_PREFIX}{measurement}"' for measurement in GPU_MEASUREMENTS)
    return (
        f'SEARCH(\'Namespace="{contract.AGENT_NAMESPACE}" {contract.INSTANCE_DIMENSION}="{iid}" '
        f"MetricName=({names})', 'Average', 60)"
    )


def instance_graphs(iid: str) -> list[tuple[str, list[list[Any]]]]:
    """One instance's six graphs: (title, CloudWatch metric arrays) (pure)."""
    ec2, agent, instance = "AWS/EC2", contract.AGENT_NAMESPACE, contract.INSTANCE_DIMENSION
    return [
        ("CPU %", [[ec2, "CPUUtilization", instance, iid]]),
        ("Memory used %", [[agent, contract.MEMORY_METRIC, instance, iid]]),
        (
            "Memory pressure (PSI avg10 %) and workers killed",
            [
                *(
                    [agent, metric, instance, iid, "metric_type", "gauge", {"stat": "Maximum"}]
                    for metric in (contract.PRESSURE_SOME_METRIC, contract.PRESSURE_FULL_METRIC)
                ),
                [contract.GUARD_NAMESPACE, contract.OOM_KILLS_METRIC, instance, iid, {"stat": "Sum", "yAxis": "right"}],
            ],
        ),
        ("Disk used %", [[agent, contract.DISK_METRIC, instance, iid, "path", path] for path in DISK_PATHS]),
        ("GPU utilisation and memory used (MiB)", [[{"expression": gpu_search(iid), "id": "gpu"}]]),
        (
            "Status checks failed",
            [[ec2, "StatusCheckFailed_System", instance, iid], [ec2, "StatusCheckFailed_Instance", instance, iid]],
        ),
    ]


def dashboard_body(instance_ids: list[str], region: str) -> dict[str, Any]:
    """A row of six graphs per instance (pure)."""
    widgets: list[dict[str, Any]] = []
    for row, iid in enumerate(instance_ids):
        for column, (title, metrics) in enumerate(instance_graphs(iid)):
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
        named = dashboard_name(pulumi.get_stack())
        aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=named,
            dashboard_body=pulumi.Output.all(*instance_ids).apply(
                lambda ids: json.dumps(dashboard_body(list(ids), region))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.url = pulumi.Output.from_input(
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={named}"
        )
        self.register_outputs({"url": self.url})
