"""The remediation sequence's steps, each against moto: what every step leaves in AWS, and what a failing step
does to the rest."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from healthcheck import contract
from healthcheck.remediation.actions import InstanceNotFound, Remediator
from healthcheck.remediation.events import AlarmEvent
from healthcheck.remediation.policy import Verdict, claim_name
from tests.healthcheck.conftest import ALARM, World


def alarm(world: World, changed_at: str = "2026-11-29T12:00:00Z") -> AlarmEvent:
    return AlarmEvent(ALARM, "ALARM", world.instance_id, changed_at, "3 datapoints breaching")


def test_a_persons_reboot_runs_the_whole_sequence_and_names_who_asked(world: World) -> None:
    world.count("RebootInstances")
    steps: list[str] = []
    remediator = world.remediator()
    remediator.on_step = lambda step: steps.append(step.name)

    outcome = remediator.remediate(world.instance_id, "jobs stuck", requested_by="alice")

    assert outcome.decision.verdict is Verdict.REBOOT
    # The console first: it is worth most and costs one call; the screenshot last.
    assert steps == ["console output", "snapshot", "post-mortem", "screenshot", "reboot", "record", "email"]
    assert outcome.trigger.summary.startswith("a reboot requested by alice asked for it at ")
    assert (outcome.trigger.reason, outcome.trigger.alarm) == ("jobs stuck", None)
    assert world.calls == {"RebootInstances": 1}
    (email,) = world.emails()
    assert "What fired: a reboot requested by alice asked for it at" in email["Message"]
    assert "Why: jobs stuck" in email["Message"]


def test_a_persons_reboot_is_never_looked_at_again_even_where_the_function_would(world: World) -> None:
    remediator = world.remediator(relook_group="relooks", relook_role_arn="arn:aws:iam::1:role/r", function_arn="f")
    world.scheduler.create_schedule_group(Name="relooks")

    outcome = remediator.remediate(world.instance_id, "manual", requested_by="alice")

    assert "look again" not in [step.name for step in outcome.steps]
    assert world.scheduler.list_schedules(GroupName="relooks")["Schedules"] == []


def test_snapshots_cover_every_volume_and_carry_what_caused_them(world: World) -> None:
    outcome = world.remediator().handle_alarm(alarm(world))

    snapshots = world.ec2.describe_snapshots(SnapshotIds=list(outcome.snapshot_ids))["Snapshots"]
    assert len(snapshots) == 2  # the root and the data volume, in one crash-consistent call
    for snapshot in snapshots:
        tags = {tag["Key"]: tag["Value"] for tag in snapshot["Tags"]}
        assert tags[contract.SNAPSHOT_ALARM_TAG_KEY] == ALARM
        assert tags[contract.SNAPSHOT_INSTANCE_TAG_KEY] == world.instance_id
        assert tags[contract.SNAPSHOT_REASON_TAG_KEY] == outcome.decision.reason


def test_the_console_and_the_decision_are_kept_under_the_instances_postmortem_prefix(world: World) -> None:
    outcome = world.remediator().handle_alarm(alarm(world))

    prefix = f"{contract.POSTMORTEM_PREFIX}{world.instance_id}/{outcome.at}/"
    assert outcome.postmortem == f"s3://{world.bucket}/{prefix}"
    listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=prefix)["Contents"]
    assert {item["Key"].removeprefix(prefix) for item in listed} >= {"console.txt", "decision.json"}
    decision = json.loads(world.s3.get_object(Bucket=world.bucket, Key=prefix + "decision.json")["Body"].read())
    assert (decision["decision"], decision["instance_id"]) == ("REBOOT", world.instance_id)
    assert outcome.console_tail  # the email quotes the console's last lines


def test_without_a_bucket_the_postmortem_step_is_skipped_and_the_reboot_still_happens(world: World) -> None:
    world.count("RebootInstances")

    outcome = world.remediator(bucket=None).handle_alarm(alarm(world))

    steps = {step.name: step for step in outcome.steps}
    assert steps["post-mortem"].skipped
    assert steps["reboot"].ok
    assert world.calls == {"RebootInstances": 1}


def test_a_failing_step_is_reported_and_the_sequence_goes_on_to_the_reboot(world: World) -> None:
    world.count("RebootInstances")

    def refuse(**_: Any) -> None:
        raise RuntimeError("snapshots are refused today")

    world.ec2.meta.events.register("before-call.ec2.CreateSnapshots", refuse)

    outcome = world.remediator().handle_alarm(alarm(world))

    steps = {step.name: step for step in outcome.steps}
    assert not steps["snapshot"].ok
    assert "recovering anyway, without a snapshot" in steps["snapshot"].detail
    assert steps["reboot"].ok and world.calls == {"RebootInstances": 1}


def test_the_first_claimant_acts_and_a_second_with_the_same_history_skips(world: World) -> None:
    first = world.remediator().handle_alarm(alarm(world))
    history_before = ()  # both read the history before either recorded: the same claim name
    world.ssm.put_parameter(
        Name=claim_name(world.instance_id, history_before),
        Value=json.dumps({"alarm": "another", "at": int(world.now.timestamp())}),
        Type="String",
        Overwrite=True,
    )
    world.ec2.delete_tags(Resources=[world.instance_id], Tags=[{"Key": contract.HISTORY_TAG_KEY}])

    second = world.remediator().handle_alarm(alarm(world, "2026-11-29T12:00:05Z"))

    assert first.decision.verdict is Verdict.REBOOT
    assert second.decision.verdict is Verdict.SKIP_CLAIMED


def test_an_unreachable_parameter_store_goes_ahead_on_the_history_tag_alone_and_says_so(world: World) -> None:
    from botocore.exceptions import EndpointConnectionError

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://ssm.eu-west-1.amazonaws.com")

    world.ssm.meta.events.register("before-call.ssm.PutParameter", unreachable)

    outcome = world.remediator().handle_alarm(alarm(world))

    claim = next(step for step in outcome.steps if step.name == "claim")
    assert not claim.ok and "going ahead on the history tag alone" in claim.detail
    assert outcome.decision.verdict is Verdict.REBOOT
    assert any(step.name == "reboot" and step.ok for step in outcome.steps)


def test_the_history_tag_records_the_remediation_so_a_duplicate_delivery_skips(world: World) -> None:
    world.remediator().handle_alarm(alarm(world))

    (entry,) = world.tags()[contract.HISTORY_TAG_KEY].split()
    again = world.remediator().handle_alarm(alarm(world))

    assert entry.split(":")[1] == "R"
    assert again.decision.verdict is Verdict.SKIP_DUPLICATE


def test_the_look_again_is_one_schedule_in_the_functions_group_after_the_grace_period(world: World) -> None:
    world.scheduler.create_schedule_group(Name="relooks")
    remediator = world.remediator(
        relook_group="relooks",
        relook_role_arn="arn:aws:iam::123456789012:role/relook",
        function_arn="arn:aws:lambda:eu-west-1:123456789012:function:auto-reboot",
    )

    outcome = remediator.handle_alarm(alarm(world))

    (schedule,) = world.scheduler.list_schedules(GroupName="relooks")["Schedules"]
    detail = world.scheduler.get_schedule(Name=schedule["Name"], GroupName="relooks")
    expected = world.now + remediator.settings.boot_grace + timedelta(minutes=1)
    assert detail["ScheduleExpression"] == f"at({expected.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert json.loads(detail["Target"]["Input"])["alarm"]["alarm_name"] == ALARM
    assert any(step.name == "look again" and step.ok for step in outcome.steps)


def test_an_unknown_instance_is_instance_not_found_and_nothing_is_touched(world: World) -> None:
    world.count("RebootInstances")

    with pytest.raises(InstanceNotFound):
        world.remediator().remediate("i-0000000000000000a", "typo", requested_by="alice")
    assert world.calls == {}


def test_started_again_only_after_its_own_stop(world: World) -> None:
    remediator: Remediator = world.remediator()
    world.ec2.stop_instances(InstanceIds=[world.instance_id])

    untouched = remediator.handle_stopped(world.instance_id)  # stopped by someone else: left alone

    assert untouched is None and world.state() == "stopped"
