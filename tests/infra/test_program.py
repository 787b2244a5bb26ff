"""infra/__main__.py as Pulumi runs it: config in, validated, resources and exports out; bad config stops it."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "infra" / "__main__.py"


def _run_program(mocks: Any, config: dict[str, Any], stack: str = "test") -> None:
    pulumi.runtime.set_mocks(mocks, project="trainguard", stack=stack, preview=False)
    pulumi.runtime.set_all_config(
        {f"trainguard:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    )

    @pulumi.runtime.test  # type: ignore[misc]
    def run() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    try:
        run()
    finally:
        pulumi.runtime.set_all_config({})


def _example_config() -> dict[str, Any]:
    stack_file = yaml.safe_load((REPO / "Pulumi.example.yaml").read_text())
    return {
        key.removeprefix("trainguard:"): value
        for key, value in stack_file["config"].items()
        if key.startswith("trainguard:")
    }


def test_the_example_stack_config_deploys(recording_mocks) -> None:
    mocks = recording_mocks()

    _run_program(mocks, _example_config())

    types = {resource.typ for resource in mocks.resources}
    assert {"aws:ec2/instance:Instance", "aws:sns/topic:Topic", "aws:dlm/lifecyclePolicy:LifecyclePolicy"} <= types
    subscriptions = [
        r.inputs["endpoint"] for r in mocks.resources if r.typ == "aws:sns/topicSubscription:TopicSubscription"
    ]
    assert sorted(subscriptions) == ["ml-lead@example.com", "oncall@example.com"]


def test_bad_config_stops_the_program_before_any_resource_naming_each_key(recording_mocks) -> None:
    mocks = recording_mocks()
    config = _example_config() | {"sshAllowedCidrs": ["0.0.0.0/0"], "snapshotIntervalHours": "5"}

    with pytest.raises(pulumi.RunError) as caught:
        _run_program(mocks, config)

    message = str(caught.value)
    assert "trainguard:sshAllowedCidrs = '0.0.0.0/0': opens SSH to the whole internet" in message
    assert "trainguard:snapshotIntervalHours = 5" in message
    assert not [r for r in mocks.resources if r.typ.startswith("aws:")]


def test_pulumi_yaml_declares_every_setting_as_the_program_reads_it() -> None:
    """Its names, types, defaults and descriptions: Pulumi checks a stack's config against them."""
    from infra.settings import pulumi_config_schema

    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())

    assert (project["name"], project["main"], project["runtime"]["name"]) == ("trainguard", "infra/", "python")
    assert project["config"] == pulumi_config_schema()
    assert all(entry["description"] for entry in project["config"].values())


def test_a_stack_name_aws_would_refuse_in_a_derived_name_is_refused_in_one_line(recording_mocks) -> None:
    """Pulumi allows "prod.eu"; CloudWatch refuses a dashboard named trainguard-prod.eu halfway through `pulumi up`."""
    mocks = recording_mocks()

    with pytest.raises(pulumi.RunError) as caught:
        _run_program(mocks, _example_config(), stack="prod.eu")

    (line,) = str(caught.value).splitlines()
    assert line.startswith("the stack name 'prod.eu' cannot be used: ")
    assert "trainguard names its Dashboard 'trainguard-prod.eu', which AWS refuses" in line
    assert "pulumi stack rename prod-eu" in line
    assert not [r for r in mocks.resources if r.typ.startswith("aws:")]


@pytest.mark.parametrize("stack", ["dev", "prod-eu_2", "x" * 100])
def test_stack_names_of_letters_digits_dashes_and_underscores_deploy(recording_mocks, stack: str) -> None:
    mocks = recording_mocks()

    _run_program(mocks, _example_config(), stack=stack)

    (dashboard,) = [r for r in mocks.resources if r.typ == "aws:cloudwatch/dashboard:Dashboard"]
    assert dashboard.inputs["dashboardName"] == f"trainguard-{stack}"


def test_a_subnet_that_cannot_work_stops_the_program_in_one_line(recording_mocks) -> None:
    mocks = recording_mocks(default_route=None)
    config = _example_config() | {"subnetId": "subnet-0123456789abcdef0"}

    with pytest.raises(pulumi.RunError) as caught:
        _run_program(mocks, config)

    (line,) = str(caught.value).splitlines()
    assert line.startswith("trainguard:subnetId subnet-0123456789abcdef0 has no route to an internet or NAT gateway")
