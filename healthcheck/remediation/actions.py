"""The remediation sequence, shared by the auto-reboot Lambda and `python -m healthcheck reboot`.

Snapshot every EBS volume (crash-consistent across volumes), keep the console,
reboot (or stop, to start again when EC2 says it stopped), record it on the
instance, and tell a person. A failed step is reported and the sequence goes
on: a missing snapshot must not keep a hung instance down.

I/O goes through injected clients and an injected clock; boto3 clients are
created on first use, never at import.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from healthcheck.remediation.events import AlarmEvent
from healthcheck.remediation.policy import (
    HISTORY_TAG,
    Action,
    Decision,
    Entry,
    InstanceFacts,
    RemediationSettings,
    Verdict,
    decide,
    encode_history,
    fingerprint,
)
from healthcheck.remediation.report import CONSOLE_LINES, Outcome, Step, body, subject

Clock = Callable[[], datetime]


class Clients:
    """boto3 clients, made on first use (so importing this costs nothing), or injected by tests."""

    def __init__(self, region: str | None = None, **injected: Any) -> None:
        self._region = region
        self._injected = injected

    def _client(self, service: str) -> Any:
        if service in self._injected:
            return self._injected[service]
        import boto3

        # `service` is one of ec2, s3, sns: the properties below.
        self._injected[service] = boto3.client(service, region_name=self._region)  # type: ignore[call-overload]
        return self._injected[service]

    @property
    def ec2(self) -> Any:
        return self._client("ec2")

    @property
    def s3(self) -> Any:
        return self._client("s3")

    @property
    def sns(self) -> Any:
        return self._client("sns")


class InstanceNotFound(LookupError):
    """The instance id names no instance (bad input for the CLI)."""


@dataclass
class Remediator:
    settings: RemediationSettings
    clients: Clients
    clock: Clock = field(default=lambda: datetime.now(timezone.utc))
    on_step: Callable[[Step], None] = lambda step: None

    def facts(self, instance_id: str) -> InstanceFacts:
        """State, launch time, tags and instance-store presence, read now."""
        from botocore.exceptions import ClientError

        try:
            reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "").startswith("InvalidInstanceID"):
                raise InstanceNotFound(instance_id) from None
            raise
        instance = reservations[0]["Instances"][0]
        types = self.clients.ec2.describe_instance_types(InstanceTypes=[instance["InstanceType"]])["InstanceTypes"]
        return InstanceFacts(
            instance_id=instance_id,
            state=instance["State"]["Name"],
            launch_time=instance["LaunchTime"],
            tags={tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
            has_instance_store=bool(types and types[0].get("InstanceStorageSupported")),
            availability_zone=instance.get("Placement", {}).get("AvailabilityZone"),
        )

    def handle_alarm(self, event: AlarmEvent, *, force: bool = False, dry_run: bool = False) -> Outcome:
        """Decide, and unless dry_run, carry the decision out."""
        facts = self.facts(event.instance_id)
        now = self.clock()
        event_fingerprint = fingerprint(event.alarm_name, event.changed_at)
        decision = decide(facts, event_fingerprint, now, self.settings, force=force)
        outcome = Outcome(
            instance_id=event.instance_id,
            event=event,
            decision=decision,
            fingerprint=event_fingerprint,
            at=_stamp(now),
        )
        if dry_run or decision.action is None:
            return outcome
        if decision.verdict.acts and not self._claim(outcome):
            return replace(
                outcome, decision=Decision(Verdict.SKIP_DUPLICATE, "another delivery is handling this event")
            )
        if decision.verdict is Verdict.GIVE_UP:
            return self._finish(outcome, facts, [], Action.GAVE_UP)
        return self._remediate(outcome, facts)

    def handle_stopped(self, instance_id: str) -> Step | None:
        """Start an instance that trainguard stopped; any other stopped instance is left alone."""
        facts = self.facts(instance_id)
        history = facts.history
        if not history or history[-1].action is not Action.STOP_START or facts.state != "stopped":
            return None
        self.clients.ec2.start_instances(InstanceIds=[instance_id])
        entry = Entry(self.clock(), Action.STARTED, history[-1].fingerprint)
        self._record(instance_id, (*history, entry))
        step = Step("start", True, f"started {instance_id} again after the stop trainguard asked for")
        self.on_step(step)
        if self.settings.topic_arn:
            self.clients.sns.publish(
                TopicArn=self.settings.topic_arn,
                Subject=f"trainguard: started {instance_id} again",
                Message=f"{instance_id} stopped as requested and was started again at {_stamp(self.clock())}.\n"
                f"Next: python -m healthcheck probe {instance_id}\n",
            )
        return step

    def _remediate(self, outcome: Outcome, facts: InstanceFacts) -> Outcome:
        steps: list[Step] = []
        snapshot_ids = self._snapshot(outcome, steps)
        postmortem, console = self._keep_console(outcome, steps)
        outcome = replace(
            outcome,
            snapshot_ids=snapshot_ids,
            postmortem=postmortem,
            console_tail=console,
            availability_zone=facts.availability_zone,
        )
        self._run(steps, *self._recovery_call(outcome))
        return self._finish(outcome, facts, steps, outcome.decision.action or Action.REBOOT)

    def _recovery_call(self, outcome: Outcome) -> tuple[str, Callable[[], str]]:
        iid = outcome.instance_id
        if outcome.decision.verdict is Verdict.STOP_START:

            def stop() -> str:
                self.clients.ec2.stop_instances(InstanceIds=[iid], Force=True)
                return (
                    f"force-stop requested at {_stamp(self.clock())}; trainguard starts it when EC2 reports it stopped"
                )

            return "stop", stop

        def reboot() -> str:
            self.clients.ec2.reboot_instances(InstanceIds=[iid])
            return f"reboot requested at {_stamp(self.clock())}"

        return "reboot", reboot

    def _finish(self, outcome: Outcome, facts: InstanceFacts, steps: list[Step], action: Action) -> Outcome:
        entry = Entry(self.clock(), action, outcome.fingerprint)
        self._run(steps, "record", lambda: self._record(outcome.instance_id, (*facts.history, entry)))
        outcome = replace(outcome, steps=tuple(steps))
        if self.settings.topic_arn:
            self._run(steps, "email", lambda: self._publish(outcome))
        else:
            self._skip(steps, "email", "no topic configured (TRAINGUARD_TOPIC_ARN, --topic-arn)")
        return replace(outcome, steps=tuple(steps))

    def _snapshot(self, outcome: Outcome, steps: list[Step]) -> tuple[str, ...]:
        found: dict[str, tuple[str, ...]] = {}

        def create() -> str:
            response = self.clients.ec2.create_snapshots(
                InstanceSpecification={"InstanceId": outcome.instance_id, "ExcludeBootVolume": False},
                Description=f"trainguard: before recovering {outcome.instance_id} ({outcome.event.alarm_name})",
                CopyTagsFromSource="volume",
                TagSpecifications=[
                    {
                        "ResourceType": "snapshot",
                        "Tags": [
                            {"Key": "trainguard:alarm", "Value": outcome.event.alarm_name[:256]},
                            {"Key": "trainguard:reason", "Value": outcome.decision.reason[:256]},
                            {"Key": "trainguard:instance", "Value": outcome.instance_id},
                        ],
                    }
                ],
            )
            found["ids"] = tuple(snapshot["SnapshotId"] for snapshot in response["Snapshots"])
            return f"{len(found['ids'])} snapshot(s): {', '.join(found['ids'])}"

        self._run(steps, "snapshot", create, failure_note="recovering anyway, without a snapshot")
        return found.get("ids", ())

    def _keep_console(self, outcome: Outcome, steps: list[Step]) -> tuple[str | None, tuple[str, ...]]:
        console: dict[str, Any] = {}

        def fetch() -> str:
            # botocore decodes the base64 console output itself.
            text = self.clients.ec2.get_console_output(InstanceId=outcome.instance_id, Latest=True).get("Output", "")
            console["tail"] = tuple(text.splitlines()[-CONSOLE_LINES:])
            console["text"] = text
            return f"{len(text.splitlines())} lines"

        self._run(steps, "console output", fetch, failure_note="no console output kept")
        if not self.settings.bucket:
            self._skip(steps, "post-mortem", "no bucket configured (TRAINGUARD_BUCKET, --bucket)")
            return None, console.get("tail", ())
        prefix = f"postmortem/{outcome.instance_id}/{outcome.at}/"

        def store() -> str:
            put = functools.partial(self.clients.s3.put_object, Bucket=self.settings.bucket)
            put(Key=prefix + "console.txt", Body=console.get("text", "").encode(), ContentType="text/plain")
            put(Key=prefix + "decision.json", Body=_decision_json(outcome).encode(), ContentType="application/json")
            stored = ["console.txt", "decision.json"]
            try:
                image = self.clients.ec2.get_console_screenshot(InstanceId=outcome.instance_id, WakeUp=True)
                put(Key=prefix + "screenshot.jpg", Body=base64.b64decode(image["ImageData"]), ContentType="image/jpeg")
                stored.append("screenshot.jpg")
            except Exception:  # noqa: BLE001 - many instance types have no screenshot; that is not a failure
                pass
            return f"s3://{self.settings.bucket}/{prefix} ({', '.join(stored)})"

        ok = self._run(steps, "post-mortem", store, failure_note="post-mortem not stored")
        return (f"s3://{self.settings.bucket}/{prefix}" if ok else None), console.get("tail", ())

    def _claim(self, outcome: Outcome) -> bool:
        """Atomically claim this alarm event, so concurrent duplicate deliveries act once.

        Without a bucket there is nothing to claim with; the history tag still
        catches duplicates that arrive one after the other.
        """
        if not self.settings.bucket:
            return True
        from botocore.exceptions import ClientError

        try:
            self.clients.s3.put_object(
                Bucket=self.settings.bucket,
                Key=f"postmortem/{outcome.instance_id}/claims/{outcome.fingerprint}",
                Body=outcome.at.encode(),
                IfNoneMatch="*",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        return True

    def _record(self, instance_id: str, history: tuple[Entry, ...]) -> str:
        value = encode_history(history)
        self.clients.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": HISTORY_TAG, "Value": value}])
        return f"{HISTORY_TAG}={value}"

    def _publish(self, outcome: Outcome) -> str:
        self.clients.sns.publish(TopicArn=self.settings.topic_arn, Subject=subject(outcome), Message=body(outcome))
        return f"sent to {self.settings.topic_arn}"

    def _skip(self, steps: list[Step], name: str, why: str) -> None:
        step = Step(name, True, why, skipped=True)
        steps.append(step)
        self.on_step(step)

    def _run(self, steps: list[Step], name: str, action: Callable[[], str], failure_note: str = "") -> bool:
        try:
            detail = action()
        except Exception as error:  # noqa: BLE001 - one failed step must not stop the recovery
            note = f"; {failure_note}" if failure_note else ""
            step = Step(name, False, f"{type(error).__name__}: {error}{note}")
        else:
            step = Step(name, True, detail)
        steps.append(step)
        self.on_step(step)
        return step.ok


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decision_json(outcome: Outcome) -> str:
    return json.dumps(
        {
            "instance_id": outcome.instance_id,
            "alarm": outcome.event.alarm_name,
            "alarm_state": outcome.event.state,
            "alarm_changed_at": outcome.event.changed_at,
            "decision": outcome.decision.verdict.name,
            "reason": outcome.decision.reason,
            "at": outcome.at,
        },
        indent=2,
    )
