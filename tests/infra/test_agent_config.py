"""The CloudWatch agent config: valid against the agent's own schema, and dimensioned as the alarms expect."""

from __future__ import annotations

import json
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


def test_the_dashboard_searches_the_gpu_dimensions_the_agent_emits() -> None:
    from infra.components.dashboard import dashboard_body

    body = json.dumps(dashboard_body(["i-0123456789abcdef0"], "eu-west-1"))

    # The agent's nvidia_gpu metrics carry index, name and host; host is omitted, InstanceId appended.
    assert "{CWAgent,InstanceId,index,name}" in body
    assert "arch" not in body and "swap" not in body


def test_user_data_is_yaml_that_round_trips() -> None:
    from infra.user_data import cloud_config, user_data

    values = ("bucket", "vol-0123456789abcdef0", "eu-west-1", "0123456789abcdef", "arn:aws:sns:eu-west-1:1:topic")

    assert yaml.safe_load(user_data(*values)) == cloud_config(*values)
