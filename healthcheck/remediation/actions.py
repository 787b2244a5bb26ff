"""The remediation sequence, shared by the auto-reboot Lambda and `trainguard reboot`.

Claim the instance (one remediation per instance per grace period), keep the
console, snapshot every EBS volume (crash-consistent across volumes), store the
post-mortem, reboot (or stop, to start again when EC2 says it stopped), record
it on the instance, arrange to look again when the grace period ends, tell a
person, and release the claim. A failed step is reported and the sequence goes
on: a missing snapshot must not keep a hung instance down.

In the Lambda the evidence shares the invocation's time (Invocation): each
piece is taken only if, after it at its worst, the recovery call and its
record still fit. The console output comes first (it is worth most and costs
one call), the screenshot last.

I/O goes through injected clients and an injected clock; boto3 clients are
created on first use, never at import.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
from collections.abc import Callable, Iterator
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
    decode_history,
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

    @property
    def region(self) -> str | None:
        return self._region

    @property
    def worst_call_s(self) -> float:
        """The longest one call can take: see worst_call_s."""
        return worst_call_s(self._limits)

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


# botocore's standard retry mode waits at most 1 s before the first retry, doubling, never more than 20 s
# (botocore/retries/standard.py, ExponentialBackoff; newer botocore waits 50 ms unless throttled).
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 20.0


def worst_call_s(limits: aws.Limits) -> float:
    """The longest one call can take: every attempt to its connect and read timeouts, and the backoff between."""
    backoff = sum(min(FIRST_BACKOFF_S * 2.0**retry, MAX_BACKOFF_S) for retry in range(limits.attempts - 1))
    return limits.attempts * (limits.connect_s + limits.read_s) + backoff


@dataclass(frozen=True)
class Invocation:
    """The Lambda invocation a remediation runs in: its request id and the seconds it has left.

    Lambda's retries of an invocation that failed (a timeout) keep its request
    id, so a retry knows the claim its first attempt made. Outside Lambda (the
    CLI): no id, and no limit.
    """

    request_id: str | None = None
    remaining_s: Callable[[], float] = lambda: math.inf

    @classmethod
    def of(cls, context: Any) -> Invocation:
        """From the Lambda context (None, or anything without its methods, is no invocation)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        request = getattr(context, "aws_request_id", None)
        return cls(
            request_id=request if isinstance(request, str) and request else None,
            remaining_s=(lambda: remaining() / 1000) if callable(remaining) else (lambda: math.inf),
        )


class InstanceNotFound(LookupError):
    """The instance id names no instance (bad input for the CLI)."""


# How far back to read the canary's SSHResponsive, at its high-resolution period.
SSH_LOOKBACK = timedelta(minutes=5)
SSH_PERIOD_S = 10
# Abandoned claims (holder died before recording) to step over before giving up the race.
MAX_STALE_CLAIMS = 3
# A claim holds at least this long, even with no grace period: longer than a remediation takes (the function's
# timeout, two minutes).
CLAIM_HELD_AT_LEAST = timedelta(minutes=5)
# What must still fit once the evidence is taken: the recovery call (reboot or stop) and its record.
RESERVED_CALLS = 2
# Claims older than this are litter whoever made them: no holder or racer can still be running (the sweep).
CLAIM_LITTER_AGE = timedelta(days=1)
# Parameter Store deletes at most 10 names per DeleteParameters, and lists at most 10 per page.
SSM_BATCH = 10
# Pages one listing may read (claims, snapshots): a sweep ends, and the next day's goes on.
MAX_PAGES = 50


@dataclass
class Remediator:
    settings: RemediationSettings
    clients: Clients
    clock: Clock = field(default=lambda: datetime.now(timezone.utc))
    on_step: Callable[[Step], None] = lambda step: None
    invocation: Invocation = field(default_factory=Invocation)

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
            region=self.settings.region or self.clients.region,
        )
        if dry_run:
            return outcome
        if decision.action is None:
            steps: list[Step] = []
            self._look_again(outcome, facts, now, steps)
            return self._tell(outcome, steps) if decision.verdict.emails else replace(outcome, steps=tuple(steps))
        claim_steps: list[Step] = []
        won, claim = self._claim(outcome, facts, now, claim_steps)
        if not won:
            return replace(
                outcome,
                decision=Decision(Verdict.SKIP_CLAIMED, "another alarm claimed this instance's remediation first"),
            )
        if decision.verdict is Verdict.GIVE_UP:
            return self._finish(outcome, facts, claim_steps, Action.GAVE_UP, claim)
        return self._remediate(outcome, facts, claim_steps, claim)

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
                f"Next: trainguard probe {instance_id}{self._region_option()}\n",
            )
        return step

    def report_failure(self, instance_id: str, what: str, error: BaseException) -> None:
        """Tell a person that an event could not be handled (the function returns instead of raising)."""
        if self.settings.topic_arn:
            self.clients.sns.publish(
                TopicArn=self.settings.topic_arn,
                Subject=f"trainguard: could not handle {what} for {instance_id}"[:MAX_SUBJECT],
                Message=f"{what} for {instance_id}: {type(error).__name__}: {error}\n"
                f"Look at the instance: trainguard probe {instance_id}{self._region_option()}\n",
            )

    def _region_option(self) -> str:
        """` --region R` for the commands an email prints, when the region is known."""
        region = self.settings.region or self.clients.region
        return f" --region {region}" if region else ""

    def _remediate(self, outcome: Outcome, facts: InstanceFacts, steps: list[Step], claim: str | None) -> Outcome:
        """The evidence, most valuable first and each only while the recovery still fits, then the recovery."""
        recovery, call = self._recovery_call(outcome)
        console = self._console(outcome, recovery, steps)
        outcome = replace(outcome, console_tail=tuple(console.splitlines()[-CONSOLE_LINES:]) if console else ())
        outcome = replace(outcome, snapshot_ids=self._snapshot(outcome, recovery, steps))
        outcome = replace(outcome, postmortem=self._store_postmortem(outcome, console, recovery, steps))
        self._run(steps, recovery, call)
        return self._finish(outcome, facts, steps, outcome.decision.action or Action.REBOOT, claim)

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

    def _finish(
        self, outcome: Outcome, facts: InstanceFacts, steps: list[Step], action: Action, claim: str | None
    ) -> Outcome:
        entry = Entry(self.clock(), action, outcome.fingerprint)
        recorded = self._run(steps, "record", lambda: self._record(outcome.instance_id, (*facts.history, entry)))
        self._look_again(outcome, facts, self.clock(), steps)
        told = self._tell(outcome, steps)
        # Recorded: the history has moved on, and with it every claim's name, so the claims can go. Not recorded:
        # this claim is all that stops a second remediation inside the grace period, so it stays.
        if self._fits(1):
            self._tidy_claims(outcome.instance_id, keep=None if recorded else claim)
        return told

    def _tell(self, outcome: Outcome, steps: list[Step]) -> Outcome:
        outcome = replace(outcome, steps=tuple(steps))
        if self.settings.topic_arn:
            self._run(steps, "email", lambda: self._publish(outcome))
        else:
            self._skip(steps, "email", f"no topic configured ({contract.TOPIC_ARN_VARIABLE}, --topic-arn)")
        return replace(outcome, steps=tuple(steps))

    def _fits(self, calls: int) -> bool:
        """Whether `calls` more calls, each at its worst, still leave the recovery call and its record their time."""
        worst = self.clients.worst_call_s
        return self.invocation.remaining_s() - calls * worst >= RESERVED_CALLS * worst

    def _evidence(
        self, steps: list[Step], name: str, calls: int, recovery: str, action: Callable[[], str], failure_note: str
    ) -> bool:
        """One piece of evidence, taken only if it fits in the time the recovery leaves (see _fits)."""
        if not self._fits(calls):
            left = self.invocation.remaining_s()
            self._skip(steps, name, f"not taken: {left:.0f}s of the function's time left, kept for the {recovery}")
            return False
        return self._run(steps, name, action, failure_note=failure_note)

    def _console(self, outcome: Outcome, recovery: str, steps: list[Step]) -> str:
        found: dict[str, str] = {}

        def fetch() -> str:
            # botocore decodes the base64 console output itself.
            text = self.clients.ec2.get_console_output(InstanceId=outcome.instance_id, Latest=True).get("Output", "")
            found["text"] = text
            return f"{len(text.splitlines())} lines"

        self._evidence(steps, "console output", 1, recovery, fetch, "no console output kept")
        return found.get("text", "")

    def _snapshot(self, outcome: Outcome, recovery: str, steps: list[Step]) -> tuple[str, ...]:
        found: dict[str, tuple[str, ...]] = {}
        expires = (self.clock() + self.settings.evidence_retention).strftime("%Y-%m-%d")

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
                            {"Key": contract.SNAPSHOT_SOURCE_TAG_KEY, "Value": contract.REMEDIATION_SNAPSHOT_SOURCE},
                            {"Key": contract.SNAPSHOT_EXPIRES_TAG_KEY, "Value": expires},
                        ],
                    }
                ],
            )
            found["ids"] = tuple(snapshot["SnapshotId"] for snapshot in response["Snapshots"])
            return f"{len(found['ids'])} snapshot(s), kept until {expires}: {', '.join(found['ids'])}"

        self._evidence(steps, "snapshot", 1, recovery, create, "recovering anyway, without a snapshot")
        return found.get("ids", ())

    def _store_postmortem(self, outcome: Outcome, console: str, recovery: str, steps: list[Step]) -> str | None:
        """console.txt and decision.json, then the screenshot where the type has one, under postmortem/."""
        if not self.settings.bucket:
            self._skip(steps, "post-mortem", f"no bucket configured ({contract.BUCKET_VARIABLE}, --bucket)")
            return None
        where = f"s3://{self.settings.bucket}/{contract.POSTMORTEM_PREFIX}{outcome.instance_id}/{outcome.at}/"
        key = where.removeprefix(f"s3://{self.settings.bucket}/")
        put = functools.partial(self.clients.s3.put_object, Bucket=self.settings.bucket)

        def store() -> str:
            put(Key=key + "console.txt", Body=console.encode(), ContentType="text/plain")
            put(Key=key + "decision.json", Body=_decision_json(outcome).encode(), ContentType="application/json")
            return f"{where} (console.txt, decision.json)"

        def screenshot() -> str:
            try:
                image = self.clients.ec2.get_console_screenshot(InstanceId=outcome.instance_id, WakeUp=True)
            except Exception as error:  # noqa: BLE001 - many instance types have no screenshot; that is no failure
                return f"none kept ({aws.error_code(error) or type(error).__name__})"
            put(Key=key + "screenshot.jpg", Body=base64.b64decode(image["ImageData"]), ContentType="image/jpeg")
            return f"{where}screenshot.jpg"

        stored = self._evidence(steps, "post-mortem", 2, recovery, store, "post-mortem not stored")
        if stored:
            self._evidence(steps, "screenshot", 2, recovery, screenshot, "no screenshot kept")
        return where if stored else None

    def _claim(
        self, outcome: Outcome, facts: InstanceFacts, now: datetime, steps: list[Step]
    ) -> tuple[bool, str | None]:
        """Atomically claim the instance's next remediation, so alarms arriving together act once: (won, its name).

        An SSM parameter named by the instance and the history it read (see
        claim_name), created by PutParameter without Overwrite: whoever
        creates it acts, the others skip. It needs no bucket, and no request
        parameter that an older botocore lacks (S3's IfNoneMatch did). Its value
        holds when it was made (by the claimant's clock, so every claimant
        judges it alike), and in the Lambda the invocation's request id and
        deadline.

        A claim found made by an earlier attempt of this same invocation, whose
        deadline has passed (it timed out, and Lambda retried), is this
        remediation's own: it carries on. Any other claim older than a grace
        period (and CLAIM_HELD_AT_LEAST) whose holder never recorded its act
        is stepped over. Having won, it reads the history again: a winner that
        recorded and released its claim between this reader's two looks makes
        the name free again, and the moved history says so; a claim released
        between PutParameter and GetParameter is judged by the history too. If Parameter Store
        cannot be reached, the sequence goes ahead on the history tag alone,
        and says so: a hung instance left hung is worse than a rare double.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        left = self.invocation.remaining_s()
        value = {
            "alarm": outcome.trigger.name,
            "at": int(now.timestamp()),
            "request": self.invocation.request_id,
            "until": int(now.timestamp() + left) if math.isfinite(left) else None,
        }
        stale: tuple[str, ...] = ()
        try:
            for _ in range(MAX_STALE_CLAIMS + 1):
                name = claim_name(outcome.instance_id, facts.history, stale)
                try:
                    self.clients.ssm.put_parameter(
                        Name=name,
                        Value=json.dumps(value),
                        Type="String",
                        Overwrite=False,
                        Description=f"trainguard: claims the next remediation of {outcome.instance_id}",
                    )
                except ClientError as error:
                    if aws.error_code(error) != "ParameterAlreadyExists":
                        raise
                    try:
                        held = _claim_value(self.clients.ssm.get_parameter(Name=name)["Parameter"]["Value"])
                    except ClientError as gone:
                        if aws.error_code(gone) != "ParameterNotFound":
                            raise
                        # Released between the two calls: its holder recorded its act (the history moved, so
                        # this alarm's remediation is done) or gave the name up (race for it again).
                        if self._history_moved(outcome.instance_id, facts):
                            return False, None
                        continue
                    if self._earlier_attempt(held, now):
                        self._note(steps, "claim", f"resumed: an earlier attempt of this invocation made {name}")
                        return True, name
                    at = held.get("at")
                    holds_for = max(self.settings.boot_grace, CLAIM_HELD_AT_LEAST).total_seconds()
                    if isinstance(at, int) and now.timestamp() - at < holds_for:
                        return False, None
                    stale += (str(at) if isinstance(at, int) else "unreadable",)
                    continue
                if self._history_moved(outcome.instance_id, facts):
                    with contextlib.suppress(BotoCoreError, ClientError):  # a name nobody can race for again
                        self.clients.ssm.delete_parameters(Names=[name])
                    return False, None
                return True, name
            return False, None
        except (BotoCoreError, ClientError) as error:
            why = f"{type(error).__name__}: {error}; going ahead on the history tag alone"
            self._note(steps, "claim", why, ok=False)
            return True, None

    def _earlier_attempt(self, held: dict[str, Any], now: datetime) -> bool:
        """Whether a claim was made by an earlier attempt of this invocation that has certainly ended."""
        until = held.get("until")
        return (
            self.invocation.request_id is not None
            and held.get("request") == self.invocation.request_id
            and isinstance(until, int)
            and now.timestamp() > until
        )

    def _history_moved(self, instance_id: str, facts: InstanceFacts) -> bool:
        """Whether the instance's history tag changed since `facts` were read (unreadable now: assume not)."""
        try:
            instance = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        except Exception:  # noqa: BLE001 - the claim stands on its own; this look is a second safeguard
            return False
        tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
        return decode_history(tags.get(contract.HISTORY_TAG_KEY)) != facts.history

    def _claims(self, path: str) -> Iterator[dict[str, Any]]:
        """Every claim parameter under a path, page by page (at most MAX_PAGES pages)."""
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = self.clients.ssm.get_parameters_by_path(
                Path=path, Recursive=True, MaxResults=SSM_BATCH, **({"NextToken": token} if token else {})
            )
            yield from page.get("Parameters", [])
            token = page.get("NextToken")
            if not token:
                return

    def _delete_claims(self, names: list[str]) -> int:
        for start in range(0, len(names), SSM_BATCH):
            self.clients.ssm.delete_parameters(Names=names[start : start + SSM_BATCH])
        return len(names)

    def _tidy_claims(self, instance_id: str, keep: str | None = None) -> int:
        """Delete the instance's claims (but `keep`): the one just used, and any an earlier holder left."""
        # Tidying: a leftover claim blocks nothing once the history has moved on, and the daily sweep retries.
        with contextlib.suppress(Exception):
            names = [claim["Name"] for claim in self._claims(f"{contract.CLAIM_PATH}/{instance_id}")]
            return self._delete_claims([name for name in names if name != keep])
        return 0

    def forget_instances(self, instance_ids: tuple[str, ...]) -> int:
        """The stack no longer has these instances: delete every claim they left. Returns how many went."""
        return sum(self._tidy_claims(instance_id) for instance_id in instance_ids)

    def sweep(self) -> dict[str, Any]:
        """Delete remediation snapshots past their expiry tag, and claims older than CLAIM_LITTER_AGE.

        Only snapshots tagged as a remediation's, and only while the
        invocation has time; what is left goes on the next day's sweep.
        """
        now = self.clock()
        today = now.strftime("%Y-%m-%d")
        deleted: list[str] = []
        problems: list[str] = []
        for snapshot in self._remediation_snapshots():
            if not self._fits(1):
                problems.append("out of time: the rest waits for the next sweep")
                break
            tags = {tag["Key"]: tag["Value"] for tag in snapshot.get("Tags", [])}
            expires = tags.get(contract.SNAPSHOT_EXPIRES_TAG_KEY)
            if expires is None or expires > today:
                continue
            try:
                self.clients.ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
            except Exception as error:  # noqa: BLE001 - one snapshot in use (an AMI's) must not stop the sweep
                problems.append(f"{snapshot['SnapshotId']}: {aws.error_code(error) or type(error).__name__}")
            else:
                deleted.append(snapshot["SnapshotId"])
        litter = [
            claim["Name"]
            for claim in self._claims(contract.CLAIM_PATH)
            if isinstance(changed := claim.get("LastModifiedDate"), datetime) and now - changed > CLAIM_LITTER_AGE
        ]
        claims = self._delete_claims(litter) if self._fits(1) else 0
        return {"snapshots_deleted": deleted, "claims_deleted": claims, "problems": problems}

    def _remediation_snapshots(self) -> Iterator[dict[str, Any]]:
        source, remediation = contract.SNAPSHOT_SOURCE_TAG_KEY, contract.REMEDIATION_SNAPSHOT_SOURCE
        remediations = {"Name": f"tag:{source}", "Values": [remediation]}
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = self.clients.ec2.describe_snapshots(
                OwnerIds=["self"],
                Filters=[remediations],
                MaxResults=1000,
                **({"NextToken": token} if token else {}),
            )
            yield from page.get("Snapshots", [])
            token = page.get("NextToken")
            if not token:
                return

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

    def _note(self, steps: list[Step], name: str, detail: str, ok: bool = True) -> None:
        step = Step(name, ok, detail)
        steps.append(step)
        self.on_step(step)

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


def _claim_value(text: str) -> dict[str, Any]:
    """A claim's value as its maker wrote it ({} if unreadable: not one of ours)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
