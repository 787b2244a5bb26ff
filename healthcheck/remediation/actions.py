"""The remediation sequence, shared by the auto-reboot Lambda and `python -m healthcheck reboot`.

Claim the instance (one remediation per instance per grace period), snapshot
every EBS volume (crash-consistent across volumes), keep the console, reboot
(or stop, to start again when EC2 says it stopped), record it on the instance,
arrange to look again when the grace period ends, and tell a person. A failed
step is reported and the sequence goes on: a missing snapshot must not keep a
hung instance down.

I/O goes through injected clients and an injected clock; boto3 clients are
created on first use, never at import.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from healthcheck import aws, contract
from healthcheck.remediation.events import AlarmEvent, Trigger, relook_payload
from healthcheck.remediation.policy import (
    Action,
    Decision,
    Entry,
    InstanceFacts,
    RemediationSettings,
    Verdict,
    at_expression,
    claim_name,
    decide,
    encode_history,
    fingerprint,
    is_agent_heartbeat,
    relook_at,
    schedule_name,
    should_start,
    ssh_answers,
)
from healthcheck.remediation.report import CONSOLE_LINES, MAX_SUBJECT, Outcome, Step, body, subject

Clock = Callable[[], datetime]


class Clients:
    """AWS clients, each bounded by `limits` and made on first use (so importing this costs nothing), or injected
    by tests."""

    def __init__(self, region: str | None = None, limits: aws.Limits = aws.COMMAND_LIMITS, **injected: Any) -> None:
        self._region = region
        self._limits = limits
        self._injected = injected

    def _client(self, service: str) -> Any:
        if service not in self._injected:
            self._injected[service] = aws.client(
                service, purpose="to recover the instance", region=self._region, limits=self._limits
            )
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

    @property
    def ssm(self) -> Any:
        return self._client("ssm")

    @property
    def scheduler(self) -> Any:
        return self._client("scheduler")

    @property
    def cloudwatch(self) -> Any:
        return self._client("cloudwatch")


class InstanceNotFound(LookupError):
    """The instance id names no instance (bad input for the CLI)."""


# How far back to read the canary's SSHResponsive, at its high-resolution period.
SSH_LOOKBACK = timedelta(minutes=5)
SSH_PERIOD_S = 10
# Abandoned claims (holder died before recording) to step over before giving up the race.
MAX_STALE_CLAIMS = 3
# A claim holds at least this long, even with no grace period: longer than a remediation takes (60 s Lambda).
CLAIM_HELD_AT_LEAST = timedelta(minutes=5)


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
        """Decide what an alarm asks for, and unless dry_run, carry the decision out."""
        now = self.clock()
        changed = f"{event.changed_at}|look {event.look_at}" if event.is_relook else event.changed_at
        event_fingerprint = fingerprint(event.alarm_name, changed)
        if event.is_relook:
            self._forget_schedule(event.schedule)
            if not self._still_in_alarm(event.alarm_name):
                decision = Decision(Verdict.SKIP_RECOVERED, f"{event.alarm_name} is no longer in ALARM: nothing to do")
                return Outcome(event.instance_id, event.trigger, decision, event_fingerprint, _stamp(now))
        answering = is_agent_heartbeat(event.alarm_name) and self._ssh_answers(event.instance_id, now)
        return self._act(event.trigger, event_fingerprint, now, force=force, dry_run=dry_run, ssh_answering=answering)

    def remediate(
        self, instance_id: str, reason: str, *, requested_by: str, force: bool = False, dry_run: bool = False
    ) -> Outcome:
        """A person's request (`trainguard reboot`): the same rules and sequence as an alarm's, but no look again."""
        now = self.clock()
        trigger = Trigger(f"a reboot requested by {requested_by}", instance_id, _stamp(now), reason)
        return self._act(trigger, fingerprint(trigger.name, trigger.at), now, force=force, dry_run=dry_run)

    def _act(
        self,
        trigger: Trigger,
        event_fingerprint: str,
        now: datetime,
        *,
        force: bool,
        dry_run: bool,
        ssh_answering: bool = False,
    ) -> Outcome:
        facts = self.facts(trigger.instance_id)
        decision = decide(facts, event_fingerprint, now, self.settings, force=force, ssh_answering=ssh_answering)
        outcome = Outcome(
            instance_id=trigger.instance_id,
            trigger=trigger,
            decision=decision,
            fingerprint=event_fingerprint,
            at=_stamp(now),
            availability_zone=facts.availability_zone,
        )
        if dry_run:
            return outcome
        if decision.action is None:
            steps: list[Step] = []
            self._look_again(outcome, facts, now, steps)
            return self._tell(outcome, steps) if decision.verdict.emails else replace(outcome, steps=tuple(steps))
        claim_steps: list[Step] = []
        if not self._claim(outcome, facts, now, claim_steps):
            return replace(
                outcome,
                decision=Decision(Verdict.SKIP_CLAIMED, "another alarm claimed this instance's remediation first"),
            )
        if decision.verdict is Verdict.GIVE_UP:
            return self._finish(outcome, facts, claim_steps, Action.GAVE_UP)
        return self._remediate(outcome, facts, claim_steps)

    def handle_stopped(self, instance_id: str) -> Step | None:
        """Start a managed instance that trainguard stopped; any other stopped instance is left alone."""
        facts = self.facts(instance_id)
        if not should_start(facts, self.settings):
            return None
        history = facts.history
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

    def report_failure(self, instance_id: str, what: str, error: BaseException) -> None:
        """Tell a person that an event could not be handled (the function returns instead of raising)."""
        if self.settings.topic_arn:
            self.clients.sns.publish(
                TopicArn=self.settings.topic_arn,
                Subject=f"trainguard: could not handle {what} for {instance_id}"[:MAX_SUBJECT],
                Message=f"{what} for {instance_id}: {type(error).__name__}: {error}\n"
                f"Look at the instance: python -m healthcheck probe {instance_id}\n",
            )

    def _remediate(self, outcome: Outcome, facts: InstanceFacts, steps: list[Step]) -> Outcome:
        snapshot_ids = self._snapshot(outcome, steps)
        postmortem, console = self._keep_console(outcome, steps)
        outcome = replace(
            outcome,
            snapshot_ids=snapshot_ids,
            postmortem=postmortem,
            console_tail=console,
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
        self._look_again(outcome, facts, self.clock(), steps)
        return self._tell(outcome, steps)

    def _tell(self, outcome: Outcome, steps: list[Step]) -> Outcome:
        outcome = replace(outcome, steps=tuple(steps))
        if self.settings.topic_arn:
            self._run(steps, "email", lambda: self._publish(outcome))
        else:
            self._skip(steps, "email", f"no topic configured ({contract.TOPIC_ARN_VARIABLE}, --topic-arn)")
        return replace(outcome, steps=tuple(steps))

    def _snapshot(self, outcome: Outcome, steps: list[Step]) -> tuple[str, ...]:
        found: dict[str, tuple[str, ...]] = {}

        def create() -> str:
            response = self.clients.ec2.create_snapshots(
                InstanceSpecification={"InstanceId": outcome.instance_id, "ExcludeBootVolume": False},
                Description=f"trainguard: before recovering {outcome.instance_id} ({outcome.trigger.name})",
                CopyTagsFromSource="volume",
                TagSpecifications=[
                    {
                        "ResourceType": "snapshot",
                        "Tags": [
                            {"Key": contract.SNAPSHOT_ALARM_TAG_KEY, "Value": outcome.trigger.name[:256]},
                            {"Key": contract.SNAPSHOT_REASON_TAG_KEY, "Value": outcome.decision.reason[:256]},
                            {"Key": contract.SNAPSHOT_INSTANCE_TAG_KEY, "Value": outcome.instance_id},
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
            self._skip(steps, "post-mortem", f"no bucket configured ({contract.BUCKET_VARIABLE}, --bucket)")
            return None, console.get("tail", ())
        prefix = f"{contract.POSTMORTEM_PREFIX}{outcome.instance_id}/{outcome.at}/"

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

    def _claim(self, outcome: Outcome, facts: InstanceFacts, now: datetime, steps: list[Step]) -> bool:
        """Atomically claim the instance's next remediation, so alarms arriving together act once.

        An SSM parameter named by the instance and the history it read (see
        claim_name), created by PutParameter without Overwrite: whoever
        creates it acts, the others skip. It needs no bucket, and no request
        parameter that an older botocore lacks (S3's IfNoneMatch did). A claim
        older than a grace period (and CLAIM_HELD_AT_LEAST) whose holder never
        recorded its act is stepped over; its time is in its value, by the
        claimant's clock, so every claimant judges it alike. If Parameter Store
        cannot be reached, the sequence goes ahead on the history tag alone,
        and says so: a hung instance left hung is worse than a rare double.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        stale: tuple[str, ...] = ()
        try:
            for _ in range(MAX_STALE_CLAIMS + 1):
                name = claim_name(outcome.instance_id, facts.history, stale)
                try:
                    self.clients.ssm.put_parameter(
                        Name=name,
                        Value=json.dumps({"alarm": outcome.trigger.name, "at": int(now.timestamp())}),
                        Type="String",
                        Overwrite=False,
                        Description=f"trainguard: claims the next remediation of {outcome.instance_id}",
                    )
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                        raise
                    held = _claimed_at(self.clients.ssm.get_parameter(Name=name)["Parameter"]["Value"])
                    holds_for = max(self.settings.boot_grace, CLAIM_HELD_AT_LEAST).total_seconds()
                    if held is not None and now.timestamp() - held < holds_for:
                        return False
                    stale += (str(held) if held is not None else "unreadable",)
                    continue
                self._forget_claim(outcome.instance_id, facts)
                return True
            return False
        except (BotoCoreError, ClientError) as error:
            step = Step("claim", False, f"{type(error).__name__}: {error}; going ahead on the history tag alone")
            steps.append(step)
            self.on_step(step)
            return True

    def _forget_claim(self, instance_id: str, facts: InstanceFacts) -> None:
        """Delete the previous remediation's claim: its history is gone, so nobody can race for it again."""
        if not facts.history:
            return
        # Tidying up: a leftover parameter costs nothing and blocks nothing.
        with contextlib.suppress(Exception):
            self.clients.ssm.delete_parameters(Names=[claim_name(instance_id, facts.history[:-1])])

    def _look_again(self, outcome: Outcome, facts: InstanceFacts, now: datetime, steps: list[Step]) -> None:
        """Arrange a one-time schedule that brings the original alarm back when the grace period ends."""
        at = relook_at(facts, outcome.decision, now, self.settings)
        event = outcome.trigger.alarm
        # Only an alarm is looked at again, and only by the function (the CLI has no function to invoke).
        if at is None or event is None or not self.settings.relooks:
            return
        from botocore.exceptions import ClientError

        name = schedule_name(event.instance_id, event.alarm_name, at)

        def create() -> str:
            try:
                self.clients.scheduler.create_schedule(
                    Name=name,
                    GroupName=self.settings.relook_group,
                    ScheduleExpression=at_expression(at),
                    ScheduleExpressionTimezone="UTC",
                    FlexibleTimeWindow={"Mode": "OFF"},
                    ActionAfterCompletion="DELETE",
                    Description=f"trainguard: look at {event.instance_id} again ({event.alarm_name})"[:512],
                    Target={
                        "Arn": self.settings.function_arn,
                        "RoleArn": self.settings.relook_role_arn,
                        "Input": json.dumps(relook_payload(event, _stamp(at), name)),
                        "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 900},
                    },
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConflictException":
                    raise
                return f"already arranged for {_stamp(at)} ({name})"
            return f"at {_stamp(at)}, if {event.alarm_name} is still in ALARM then ({name})"

        self._run(steps, "look again", create, failure_note="no second look: watch the alarm by hand")

    def _forget_schedule(self, name: str) -> None:
        """Delete the one-time schedule that delivered this look (Scheduler deletes it too, after completion)."""
        if not (name and self.settings.relook_group):
            return
        # Already deleted after completion, or never ours: nothing to tidy.
        with contextlib.suppress(Exception):
            self.clients.scheduler.delete_schedule(Name=name, GroupName=self.settings.relook_group)

    def _still_in_alarm(self, alarm_name: str) -> bool:
        response = self.clients.cloudwatch.describe_alarms(AlarmNames=[alarm_name])
        alarms = [*response.get("MetricAlarms", []), *response.get("CompositeAlarms", [])]
        return any(alarm.get("StateValue") == "ALARM" for alarm in alarms)

    def _ssh_answers(self, instance_id: str, now: datetime) -> bool:
        """The canary's latest Trainguard/SSHResponsive for the instance, read and judged (no data: not answering)."""
        response = self.clients.cloudwatch.get_metric_statistics(
            Namespace=contract.CANARY_NAMESPACE,
            MetricName=contract.SSH_RESPONSIVE_METRIC,
            Dimensions=[{"Name": contract.INSTANCE_DIMENSION, "Value": instance_id}],
            StartTime=now - SSH_LOOKBACK,
            EndTime=now,
            Period=SSH_PERIOD_S,
            Statistics=["Maximum"],
        )
        samples = [(point["Timestamp"], float(point["Maximum"])) for point in response.get("Datapoints", [])]
        return ssh_answers(samples, now)

    def _record(self, instance_id: str, history: tuple[Entry, ...]) -> str:
        value = encode_history(history)
        self.clients.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": contract.HISTORY_TAG_KEY, "Value": value}])
        return f"{contract.HISTORY_TAG_KEY}={value}"

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


def _claimed_at(value: str) -> int | None:
    """The claim's time (epoch seconds, by the claimant's clock), or None if unreadable (not one of ours)."""
    try:
        at = json.loads(value)["at"]
    except (ValueError, TypeError, KeyError):
        return None
    return at if isinstance(at, int) else None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decision_json(outcome: Outcome) -> str:
    return json.dumps(
        {
            "instance_id": outcome.instance_id,
            "trigger": outcome.trigger.summary,
            "reason_given": outcome.trigger.reason,
            "decision": outcome.decision.verdict.name,
            "reason": outcome.decision.reason,
            "at": outcome.at,
        },
        indent=2,
    )
