"""The CloudWatch agent config: valid against the agent's own schema, and dimensioned as the alarms expect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra.agent_config import agent_config
from infra.bundle import bundle_files

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "cloudwatch-agent-config.schema.json").read_text())


@pytest.mark.parametrize("gpu", [False, True])
def test_agent_config_is_valid_against_the_official_schema(gpu: bool) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(agent_config(gpu))


def test_the_configs_the_instance_receives_are_the_validated_ones() -> None:
    files = {f.path: f.content for f in bundle_files()}

    base = json.loads(files["/opt/aws/amazon-cloudwatch-agent/etc/trainguard-base.json"])
    gpu = json.loads(files["/opt/aws/amazon-cloudwatch-agent/etc/trainguard-gpu.json"])
    assert (base, gpu) == (agent_config(False), agent_config(True))
    for config in (base, gpu):
        jsonschema.Draft4Validator(SCHEMA).validate(config)


def test_the_schema_rejects_what_the_agent_would() -> None:
    broken = agent_config(False)
    broken["metrics"]["metrics_collected"]["mem"]["measurement"] = "mem_used_percent"

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(broken)


def test_only_what_an_alarm_or_the_dashboard_uses_is_collected() -> None:
    """Each metric is billed: memory (memory and heartbeat alarms), disk (disk alarms), GPU (dashboard),

    and StatsD, where the PSI publisher sends memory pressure (the pressure alarm) every 10 s.
    """
    collected = agent_config(True)["metrics"]["metrics_collected"]

    assert set(collected) == {"mem", "disk", "nvidia_gpu", "statsd"}
    assert collected["statsd"] == {
        "service_address": "127.0.0.1:8125",
        "metrics_collection_interval": 10,
        "metrics_aggregation_interval": 10,
    }
    assert collected["mem"]["measurement"] == ["mem_used_percent"]
    assert collected["disk"]["measurement"] == ["used_percent"]
    assert collected["disk"]["resources"] == ["/", "/data"]
    assert collected["nvidia_gpu"]["measurement"] == ["utilization_gpu", "memory_used"]


def test_gpu_metrics_only_in_the_gpu_variant() -> None:
    assert "nvidia_gpu" not in agent_config(False)["metrics"]["metrics_collected"]
    assert "utilization_gpu" in agent_config(True)["metrics"]["metrics_collected"]["nvidia_gpu"]["measurement"]


def test_every_metric_carries_exactly_the_dimensions_alarms_select_on() -> None:
    config = agent_config(True)

    assert config["agent"]["omit_hostname"] is True
    assert config["metrics"]["append_dimensions"] == {"InstanceId": "${aws:InstanceId}"}
    # Only the roll-up the disk alarms select: each roll-up is a metric of its own on the bill.
    assert config["metrics"]["aggregation_dimensions"] == [["InstanceId", "path"]]


# What the agent's GPU metrics carry once the host name is omitted and InstanceId appended: index and name
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-Agent-NVIDIA-GPU.html), and arch
# with the drivers whose nvidia-smi XML names the product architecture (Telegraf's nvidia_smi input,
# plugins/inputs/nvidia_smi/schema_v12/parser.go).
GPU_DIMENSIONS = {"InstanceId", "arch", "index", "name"}
GPU_DIMENSIONS_OLDER_DRIVERS = {"InstanceId", "index", "name"}


def search_matches(expression: str, namespace: str, metric: str, dimensions: dict[str, str]) -> bool:
    """Whether a CloudWatch SEARCH expression of the forms the dashboard uses finds one metric.

    A schema {Namespace,Dim,...} matches only metrics with exactly those dimension names; each Key="value" term
    must match exactly; MetricName=("a" OR "b") any of them
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html).
    """
    query = re.fullmatch(r"SEARCH\('(.*)', '[A-Za-z]+', \d+\)", expression)
    assert query is not None, expression
    text = query.group(1)
    schema = re.match(r"\s*\{([^}]*)\}", text)
    if schema is not None:
        names = [name.strip() for name in schema.group(1).split(",")]
        if names[0] != namespace or set(names[1:]) != set(dimensions):
            return False
        text = text[schema.end() :]
    properties = {"Namespace": namespace, "MetricName": metric, **dimensions}
    for key, values in re.findall(r'(\w+)=(\([^)]*\)|"[^"]*")', text):
        allowed = re.findall(r'"([^"]*)"', values)
        if properties.get(key) not in allowed:
            return False
    return True


def test_the_dashboard_finds_the_gpu_metrics_with_and_without_arch() -> None:
    from infra.components.dashboard import dashboard_body, gpu_search

    iid = "i-0123456789abcdef0"
    search = gpu_search(iid)

    body = dashboard_body([iid], "eu-west-1")
    expressions = [
        item["expression"]
        for widget in body["widgets"]
        for line in widget["properties"]["metrics"]
        for item in line
        if isinstance(item, dict) and "expression" in item
    ]
    assert expressions == [search]
    assert "swap" not in json.dumps(body)

    for dimensions in (GPU_DIMENSIONS, GPU_DIMENSIONS_OLDER_DRIVERS):
        tags = {
            name: {"InstanceId": iid, "arch": "Ampere", "index": "0", "name": "NVIDIA A10G"}[name]
            for name in dimensions
        }
        for metric in ("nvidia_smi_utilization_gpu", "nvidia_smi_memory_used"):
            assert search_matches(search, "CWAgent", metric, tags), (dimensions, metric)
        assert not search_matches(search, "CWAgent", "nvidia_smi_temperature_gpu", tags)
        assert not search_matches(search, "CWAgent", "nvidia_smi_memory_used", tags | {"InstanceId": "i-1"})


def test_the_matcher_knows_a_schema_matches_exact_dimension_sets_only() -> None:
    """The search before, with the schema {CWAgent,InstanceId,index,name}, found nothing once the agent added arch."""
    before = (
        'SEARCH(\'{CWAgent,InstanceId,index,name} InstanceId="i-1" '
        'MetricName=("nvidia_smi_utilization_gpu" OR "nvidia_smi_memory_used")\', \'Average\', 60)'
    )
    tags = {"InstanceId": "i-1", "index": "0", "name": "NVIDIA A10G"}

    assert search_matches(before, "CWAgent", "nvidia_smi_memory_used", tags)
    assert not search_matches(before, "CWAgent", "nvidia_smi_memory_used", tags | {"arch": "Ampere"})


def test_user_data_is_yaml_that_round_trips() -> None:
    from infra.user_data import cloud_config, user_data

    values = ("bucket", "vol-0123456789abcdef0", "eu-west-1", "0123456789abcdef", "arn:aws:sns:eu-west-1:1:topic")

    assert yaml.safe_load(user_data(*values)) == cloud_config(*values)
