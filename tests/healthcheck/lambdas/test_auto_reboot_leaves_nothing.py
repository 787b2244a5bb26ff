"""The auto-reboot function under moto leaves nothing to pile up: claims go when their remediation is recorded (or
when the stack drops the instance), a remediation's snapshots carry their expiry and the daily sweep deletes them;
and a Lambda retry of an invocation that timed out carries its own remediation on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from healthcheck import contract
from healthcheck.lambdas.auto_reboot import handler
from healthcheck.remediation.actions import Invocation
from healthcheck.remediation.events import STACK_SOURCE, SWEEP_SOURCE
from tests.healthcheck.conftest import CLAIMS, World
from tests.healthcheck.lambdas.test_auto_reboot import lambda_action

# --- Claims ---------------------------------------------------------------------------------------------------


def test_the_claim_is_deleted_once_its_remediation_is_recorded(world: World) -> None:
    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert contract.HISTORY_TAG_KEY in world.tags()
    assert world.claims() == []


def test_claims_earlier_holders_left_are_swept_when_a_new_one_is_won(world: World) -> None:
    for generation in ("1700000000", "1700000000.1700000001", "0.unreadable"):
        world.ssm.put_parameter(
            Name=f"{CLAIMS}/{world.instance_id}/{generation}", Value=json.dumps({"at": 1}), Type="String"
        )
    other = "i-0aaaaaaaaaaaaaaaa"
    world.ssm.put_parameter(Name=f"{CLAIMS}/{other}/0", Value=json.dumps({"at": 1}), Type="String")

    handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert world.claims() == []
    # Another instance's claim is its own business.
    assert world.ssm.get_parameter(Name=f"{CLAIMS}/{other}/0")["Parameter"]["Value"]


def test_a_remediation_that_could_not_be_recorded_keeps_its_claim(world: World) -> None:
    """The claim is then all that stops a second remediation inside the grace period."""

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "CreateTags")

    world.ec2.meta.events.register("before-call.ec2.CreateTags", refuse)
    world.count("RebootInstances")

    first = handler(lambda_action(world.instance_id), None, remediator=world.remediator())
    world.now += timedelta(minutes=1)
    again = handler(lambda_action(world.instance_id, at="2026-11-29T12:01:00Z"), None, remediator=world.remediator())

    assert first["handled"][0]["decision"] == "REBOOT"
    assert world.claims() == [f"{CLAIMS}/{world.instance_id}/0"]
    assert again["handled"][0]["decision"] == "SKIP_CLAIMED"
    assert world.calls == {"RebootInstances": 1}


@pytest.mark.parametrize(("recorded", "decision", "reboots"), [(True, "SKIP_CLAIMED", 0), (False, "REBOOT", 1)])
def test_a_claim_released_between_its_two_looks_is_judged_by_the_history(
    world: World, recorded: bool, decision: str, reboots: int
) -> None:
    """Alarms at once: this one loses the PutParameter race, and the claim goes before its GetParameter. Its holder
    recorded a reboot (three alarms together): the moved history says the remediation is done, no second reboot.
    Its holder recorded nothing (the claim was tidied away): the race starts again, and this one wins it."""
    world.ssm.put_parameter(Name=f"{CLAIMS}/{world.instance_id}/0", Value=json.dumps({"at": 1}), Type="String")
    released: list[bool] = []

    def holder_lets_go(**_: Any) -> None:
        if not released:
            released.append(True)
            if recorded:
                entry = [{"Key": contract.HISTORY_TAG_KEY, "Value": f"{int(world.now.timestamp())}:R:0badc0de"}]
                world.ec2.create_tags(Resources=[world.instance_id], Tags=entry)
            world.ssm.delete_parameter(Name=f"{CLAIMS}/{world.instance_id}/0")

    world.ssm.meta.events.register("before-call.ssm.GetParameter", holder_lets_go)
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator())

    assert released
    assert summary["handled"][0]["decision"] == decision
    assert world.calls == ({"RebootInstances": reboots} if reboots else {})


# --- A Lambda retry carries its own remediation on -----------------------------------------------------------


def _claimed_by(world: World, request: str, until: datetime) -> None:
    """What an attempt of invocation `request` left when it timed out before recording."""
    world.ssm.put_parameter(
        Name=f"{CLAIMS}/{world.instance_id}/0",
        Value=json.dumps(
            {
                "alarm": "x",
                "at": int((world.now - timedelta(minutes=3)).timestamp()),
                "request": request,
                "until": int(until.timestamp()),
            }
        ),
        Type="String",
    )


def test_a_retry_that_finds_its_own_claim_from_a_timed_out_attempt_reboots(world: World) -> None:
    """Lambda retried a timed-out invocation (same request id): the claim is its own, and the host still hung."""
    _claimed_by(world, "request-1", until=world.now - timedelta(minutes=1))
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator(Invocation("request-1")))

    assert summary["handled"][0]["decision"] == "REBOOT"
    assert world.calls == {"RebootInstances": 1}
    (email,) = world.emails()
    assert "claim: done, resumed: an earlier attempt of this invocation made" in email["Message"]
    assert world.claims() == []


@pytest.mark.parametrize(
    ("request_id", "until_from_now"),
    [("request-2", timedelta(minutes=-1)), ("request-1", timedelta(minutes=1)), (None, timedelta(minutes=-1))],
    ids=["another-invocation", "same-request-still-running", "not-in-lambda"],
)
def test_a_claim_another_invocation_holds_or_one_still_running_is_respected(
    world: World, request_id: str | None, until_from_now: timedelta
) -> None:
    _claimed_by(world, "request-1", until=world.now + until_from_now)
    world.count("RebootInstances")

    summary = handler(lambda_action(world.instance_id), None, remediator=world.remediator(Invocation(request_id)))

    assert summary["handled"][0]["decision"] == "SKIP_CLAIMED"
    assert world.calls == {}


def test_the_claim_names_the_invocation_and_its_deadline(world: World) -> None:
    made: list[dict[str, Any]] = []
    world.ssm.meta.events.register(
        "provide-client-params.ssm.PutParameter", lambda params, **_: made.append(json.loads(params["Value"]))
    )
    invocation = Invocation("request-7", remaining_s=lambda: 100.0)

    handler(lambda_action(world.instance_id), None, remediator=world.remediator(invocation))

    assert made[0]["request"] == "request-7"
    assert made[0]["until"] == int(world.now.timestamp()) + 100


# --- Evidence expires -----------------------------------------------------------------------------------------


def test_a_remediations_snapshots_say_what_made_them_and_when_they_expire(world: World) -> None:
    summary = handler(
        lambda_action(world.instance_id), None, remediator=world.remediator(evidence_retention=timedelta(days=14))
    )

    snapshots = world.ec2.describe_snapshots(SnapshotIds=summary["handled"][0]["snapshot_ids"])["Snapshots"]
    expires = (world.now + timedelta(days=14)).strftime("%Y-%m-%d")
    for snapshot in snapshots:
        tags = {tag["Key"]: tag["Value"] for tag in snapshot["Tags"]}
        assert tags[contract.SNAPSHOT_SOURCE_TAG_KEY] == contract.REMEDIATION_SNAPSHOT_SOURCE
        assert tags[contract.SNAPSHOT_EXPIRES_TAG_KEY] == expires
    (email,) = world.emails()
    assert f"kept until {expires}" in email["Message"]


def _snapshot(world: World, tags: dict[str, str]) -> str:
    (volume,) = world.ec2.describe_volumes()["Volumes"][:1]
    return str(
        world.ec2.create_snapshot(
            VolumeId=volume["VolumeId"],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )["SnapshotId"]
    )


def test_the_daily_sweep_deletes_expired_remediation_snapshots_and_old_claims_only(world: World) -> None:
    # moto stamps a claim with the real time: the world's clock is two days on.
    world.now = datetime.now(timezone.utc) + timedelta(days=2)
    today = world.now.strftime("%Y-%m-%d")
    yesterday = (world.now - timedelta(days=1)).strftime("%Y-%m-%d")
    tomorrow = (world.now + timedelta(days=1)).strftime("%Y-%m-%d")
    source, expires = contract.SNAPSHOT_SOURCE_TAG_KEY, contract.SNAPSHOT_EXPIRES_TAG_KEY
    expired = [_snapshot(world, {source: "remediation", expires: day}) for day in (yesterday, today)]
    kept = [
        _snapshot(world, {source: "remediation", expires: tomorrow}),
        _snapshot(world, {source: "remediation"}),  # a person removed the expiry: kept for good
        _snapshot(world, {source: "dlm", expires: yesterday}),  # DLM's own retention handles these
        _snapshot(world, {expires: yesterday}),
    ]
    world.ssm.put_parameter(Name=f"{CLAIMS}/{world.instance_id}/0", Value="{}", Type="String")

    summary = handler({"source": SWEEP_SOURCE}, None, remediator=world.remediator())

    (swept,) = summary["handled"]
    assert sorted(swept["snapshots_deleted"]) == sorted(expired)
    assert (swept["claims_deleted"], swept["problems"]) == (1, [])
    left = {snapshot["SnapshotId"] for snapshot in world.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert left >= set(kept) and not left & set(expired)
    assert world.claims() == []


def test_a_recent_claim_survives_the_sweep(world: World) -> None:
    world.now = datetime.now(timezone.utc)
    world.ssm.put_parameter(Name=f"{CLAIMS}/{world.instance_id}/0", Value="{}", Type="String")

    handler({"source": SWEEP_SOURCE}, None, remediator=world.remediator())

    assert world.claims() == [f"{CLAIMS}/{world.instance_id}/0"]


def test_a_sweep_out_of_time_stops_and_leaves_the_rest_for_tomorrow(world: World) -> None:
    world.now = datetime.now(timezone.utc) + timedelta(days=2)
    yesterday = (world.now - timedelta(days=1)).strftime("%Y-%m-%d")
    expired = {contract.SNAPSHOT_SOURCE_TAG_KEY: "remediation", contract.SNAPSHOT_EXPIRES_TAG_KEY: yesterday}
    for _ in range(3):
        _snapshot(world, expired)

    summary = handler({"source": SWEEP_SOURCE}, None, remediator=world.remediator(Invocation(remaining_s=lambda: 5)))

    (swept,) = summary["handled"]
    assert swept["snapshots_deleted"] == []
    assert swept["problems"] == ["out of time: the rest waits for the next sweep"]


# --- The stack forgets instances it no longer has ------------------------------------------------------------


def _stack_event(action: str, now: list[str], before: list[str] | None) -> dict[str, Any]:
    """Pulumi's Lambda invocation with lifecycle_scope CRUD: the input, and its lifecycle key."""
    previous = None if before is None else {"source": STACK_SOURCE, "instance_ids": before}
    return {"source": STACK_SOURCE, "instance_ids": now, "tf": {"action": action, "prev_input": previous}}


@pytest.mark.parametrize(
    ("action", "before", "gone"),
    [("create", None, []), ("update", ["kept", "dropped"], ["dropped"]), ("delete", ["kept"], ["kept"])],
)
def test_the_stack_deletes_the_claims_of_instances_it_drops_or_destroys(
    world: World, action: str, before: list[str] | None, gone: list[str]
) -> None:
    ids = {"kept": world.instance_id, "dropped": "i-0aaaaaaaaaaaaaaaa"}
    for instance_id in ids.values():
        world.ssm.put_parameter(Name=f"{CLAIMS}/{instance_id}/0", Value="{}", Type="String")

    summary = handler(
        _stack_event(action, [ids["kept"]], None if before is None else [ids[name] for name in before]),
        None,
        remediator=world.remediator(),
    )

    (forgot,) = summary["handled"]
    assert forgot["instances"] == sorted(ids[name] for name in gone)
    left = world.ssm.get_parameters_by_path(Path=CLAIMS, Recursive=True)["Parameters"]
    assert sorted(p["Name"] for p in left) == sorted(f"{CLAIMS}/{ids[n]}/0" for n in ids if n not in gone)


@pytest.mark.parametrize(
    "event",
    [
        {"source": STACK_SOURCE, "instance_ids": ["i-0aaaaaaaaaaaaaaaa"]},
        {"source": STACK_SOURCE, "instance_ids": ["i-0aaaaaaaaaaaaaaaa\n"], "tf": {"action": "delete"}},
        {"source": STACK_SOURCE, "instance_ids": "i-0aaaaaaaaaaaaaaaa", "tf": {"action": "delete"}},
        {"source": STACK_SOURCE, "tf": {"action": "explode"}},
    ],
    ids=["no-lifecycle", "not-an-id", "not-a-list", "unknown-action"],
)
def test_a_malformed_stack_event_deletes_nothing(world: World, event: dict[str, Any]) -> None:
    world.ssm.put_parameter(Name=f"{CLAIMS}/i-0aaaaaaaaaaaaaaaa/0", Value="{}", Type="String")

    summary = handler(event, None, remediator=world.remediator())

    assert summary["handled"] == [] and summary["ignored"]
    assert world.ssm.get_parameter(Name=f"{CLAIMS}/i-0aaaaaaaaaaaaaaaa/0")
