"""When to reboot a hung instance, and when not to: a pure decision over facts, history, time and settings.

The history lives on the instance itself, in one tag, so no database is needed:
`trainguard:remediations` holds entries `EPOCH:ACTION:FINGERPRINT`, newest
last, where the fingerprint names the alarm event that caused it. EC2 caps a
tag value at 256 characters (11 entries), so when it is full the entries the
budget does not count (gave-up and started notes) go first: the last
MAX_REBOOTS_LIMIT remediations are never forgotten.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from healthcheck import aws, contract

# EC2 tag values are at most 256 Unicode characters:
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
TAG_VALUE_LIMIT = 256
# An entry is at most 21 characters (10-digit epoch, action, 8-hex fingerprint) plus a space:
# 11 always fit, so up to 10 remediations are kept together with the newest entry of any kind.
MAX_REBOOTS_LIMIT = 10
SSH_FRESH = timedelta(minutes=2)  # a canary sample this recent that answered means SSH is fine
# EventBridge Scheduler schedule and group names: 1 to 64 of [0-9a-zA-Z-_.]
# (https://docs.aws.amazon.com/scheduler/latest/APIReference/API_CreateSchedule.html).
SCHEDULER_NAME = re.compile(r"[0-9a-zA-Z._-]{1,64}")


class RemediationConfigError(ValueError):
    """An environment variable the remediation reads is malformed; the message names it and the fix."""


def managed_tag(environ: Mapping[str, str]) -> tuple[str, str]:
    """TRAINGUARD_MANAGED_TAG (`key=value`, default trainguard:managed=true): what marks an instance as ours."""
    variable = contract.MANAGED_TAG_VARIABLE
    tag = environ.get(variable, f"{contract.MANAGED_TAG_KEY}={contract.MANAGED_TAG_VALUE}")
    key, equals, value = tag.partition("=")
    if not equals or not key:
        raise RemediationConfigError(f"{variable}={tag!r}: expected key=value")
    return key, value


# What each number the function reads from its environment may be: past these, a timedelta overflows, or the
# setting makes no sense (a grace of a month never reboots; a window of years never lets the budget recover).
MAX_REBOOT_WINDOW_HOURS = 168
MAX_BOOT_GRACE_SECONDS = 86400
MAX_EVIDENCE_RETAIN_DAYS = 365
DEFAULT_EVIDENCE_RETAIN_DAYS = 21


@dataclass(frozen=True)
class RemediationSettings:
    topic_arn: str | None = None
    bucket: str | None = None
    managed_tag: tuple[str, str] = (contract.MANAGED_TAG_KEY, contract.MANAGED_TAG_VALUE)
    max_reboots: int = 3
    reboot_window: timedelta = timedelta(hours=6)
    boot_grace: timedelta = timedelta(seconds=600)
    evidence_retention: timedelta = timedelta(days=DEFAULT_EVIDENCE_RETAIN_DAYS)  # snapshots and post-mortem files
    relook_group: str | None = None  # EventBridge Scheduler group for the looks after the grace period
    relook_role_arn: str | None = None  # the role Scheduler invokes the function with
    function_arn: str | None = None  # the function itself: set by the Lambda from its context
    region: str | None = None  # named in the commands the email prints, when known

    @property
    def relooks(self) -> bool:
        """Whether the function can arrange to look again (the CLI cannot: it has no function to invoke)."""
        return bool(self.relook_group and self.relook_role_arn and self.function_arn)

    def policy_environment(self) -> dict[str, str]:
        """The variables from_environment reads the policy from (the tag, the budget, the grace, the retention)."""
        return {
            contract.MANAGED_TAG_VARIABLE: "=".join(self.managed_tag),
            contract.MAX_REBOOTS_VARIABLE: str(self.max_reboots),
            contract.REBOOT_WINDOW_HOURS_VARIABLE: str(int(self.reboot_window.total_seconds() // 3600)),
            contract.BOOT_GRACE_SECONDS_VARIABLE: str(int(self.boot_grace.total_seconds())),
            contract.EVIDENCE_RETAIN_DAYS_VARIABLE: str(self.evidence_retention.days),
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RemediationSettings:
        """Settings from TRAINGUARD_* variables (docs/auto-reboot.md), and the region the Lambda runs in."""
        group = environ.get(contract.RELOOK_GROUP_VARIABLE) or None
        if group is not None and not SCHEDULER_NAME.fullmatch(group):
            raise RemediationConfigError(
                f"{contract.RELOOK_GROUP_VARIABLE}={group!r}: expected 1 to 64 letters, digits, '-', '_' or '.'"
            )
        return cls(
            topic_arn=environ.get(contract.TOPIC_ARN_VARIABLE) or None,
            bucket=environ.get(contract.BUCKET_VARIABLE) or None,
            managed_tag=managed_tag(environ),
            max_reboots=_whole_number(
                environ,
                contract.MAX_REBOOTS_VARIABLE,
                3,
                0,
                MAX_REBOOTS_LIMIT,
                why=" (the history tag counts 10: EC2 tag values hold 256 characters)",
            ),
            reboot_window=timedelta(
                hours=_whole_number(environ, contract.REBOOT_WINDOW_HOURS_VARIABLE, 6, 1, MAX_REBOOT_WINDOW_HOURS)
            ),
            boot_grace=timedelta(
                seconds=_whole_number(environ, contract.BOOT_GRACE_SECONDS_VARIABLE, 600, 0, MAX_BOOT_GRACE_SECONDS)
            ),
            evidence_retention=timedelta(
                days=_whole_number(
                    environ,
                    contract.EVIDENCE_RETAIN_DAYS_VARIABLE,
                    DEFAULT_EVIDENCE_RETAIN_DAYS,
                    1,
                    MAX_EVIDENCE_RETAIN_DAYS,
                )
            ),
            relook_group=group,
            relook_role_arn=environ.get(contract.RELOOK_ROLE_ARN_VARIABLE) or None,
            region=aws.region_of(None, environ),
        )


def _whole_number(environ: Mapping[str, str], name: str, default: int, low: int, high: int, why: str = "") -> int:
    """A variable's whole number from low to high, or its default when unset; anything else names the variable.

    ASCII digits only, and few of them: str.isdigit() accepts "²", which int() refuses, and int() refuses
    strings of more than 4300 digits.
    """
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise RemediationConfigError(f"{name}={shown!r}: expected a whole number from {low} to {high}{why}")
    return int(text)


class Action(enum.Enum):
    """What a remediation did, as recorded in the history tag."""

    REBOOT = "R"
    STOP_START = "S"
    STARTED = "T"
    GAVE_UP = "G"


@dataclass(frozen=True)
class Entry:
    at: datetime
    action: Action
    fingerprint: str

    def encode(self) -> str:
        return f"{int(self.at.timestamp())}:{self.action.value}:{self.fingerprint}"


def decode_history(tag_value: str | None) -> tuple[Entry, ...]:
    """The entries of the history tag; anything unreadable is ignored, never fatal."""
    entries = []
    for token in (tag_value or "").split():
        epoch, _, rest = token.partition(":")
        action, _, fingerprint = rest.partition(":")
        try:
            entries.append(Entry(datetime.fromtimestamp(int(epoch), timezone.utc), Action(action), fingerprint))
        except (ValueError, OverflowError, OSError):  # not a number, not an action, or a time no clock can hold
            continue
    return tuple(entries)


REMEDIATIONS = (Action.REBOOT, Action.STOP_START)


def encode_history(entries: tuple[Entry, ...]) -> str:
    """The tag value: every entry that fits in 256 characters, dropping the least needed first.

    Least needed: the oldest entry that is not a remediation and not the newest
    entry (the newest says what just happened: a stop to finish, a restart to
    wait for); only when none is left, the oldest remediation. Since
    MAX_REBOOTS_LIMIT remediations and the newest entry always fit, a window's
    remediations are never forgotten while the budget holds.
    """
    kept = list(entries)
    while len(" ".join(entry.encode() for entry in kept)) > TAG_VALUE_LIMIT:
        notes = [entry for entry in kept[:-1] if entry.action not in REMEDIATIONS]
        kept.remove(notes[0] if notes else kept[0])
    return " ".join(entry.encode() for entry in kept)


@dataclass(frozen=True)
class InstanceFacts:
    """What EC2 says about the instance, read just before deciding."""

    instance_id: str
    state: str
    launch_time: datetime
    tags: dict[str, str] = field(default_factory=dict)
    has_instance_store: bool = False
    availability_zone: str | None = None

    @property
    def history(self) -> tuple[Entry, ...]:
        return decode_history(self.tags.get(contract.HISTORY_TAG_KEY))

    @property
    def recorded_boot(self) -> datetime | None:
        """When the instance says it last booted (its boot tag), or None if it has not said, or unreadably."""
        text = self.tags.get(contract.BOOT_TAG_KEY, "")
        if not re.fullmatch(r"[0-9]{1,10}", text):
            return None
        return datetime.fromtimestamp(int(text), timezone.utc)


class Verdict(enum.Enum):
    """The decision, and whether it acts on the instance."""

    SKIP_NOT_MANAGED = "skip: not managed"
    SKIP_NOT_RUNNING = "skip: not running"
    SKIP_DUPLICATE = "skip: duplicate"
    SKIP_SSH_ANSWERS = "skip: SSH answers, only the agent is silent"
    SKIP_BOOT_GRACE = "skip: inside the boot grace period"
    SKIP_CLAIMED = "skip: another alarm is being handled for this instance"
    SKIP_GAVE_UP = "skip: already gave up in this window"
    SKIP_RECOVERED = "skip: the alarm is no longer in ALARM"
    GIVE_UP = "give up: reboot budget exhausted"
    REBOOT = "reboot"
    STOP_START = "escalate to stop/start"

    @property
    def acts(self) -> bool:
        return self in (Verdict.REBOOT, Verdict.STOP_START)

    @property
    def emails(self) -> bool:
        """Whether a person hears of it: every action, giving up once, and an agent silent while SSH answers."""
        return self.acts or self in (Verdict.GIVE_UP, Verdict.SKIP_SSH_ANSWERS)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str

    @property
    def action(self) -> Action | None:
        return {
            Verdict.REBOOT: Action.REBOOT,
            Verdict.STOP_START: Action.STOP_START,
            Verdict.GIVE_UP: Action.GAVE_UP,
        }.get(self.verdict)


def is_agent_heartbeat(alarm_name: str) -> bool:
    return contract.alarm_key(alarm_name) == contract.HEARTBEAT_ALARM_KEY


def ssh_answers(samples: Iterable[tuple[datetime, float]], now: datetime) -> bool:
    """Whether the canary's latest SSHResponsive sample says SSH answered, within the last two minutes.

    No samples, a latest sample of 0, or a stale one: not answering (so a frozen
    host is still rebooted when the canary itself is down).
    """
    latest = max(samples, key=lambda sample: sample[0], default=None)
    return latest is not None and latest[1] >= 1 and now - latest[0] <= SSH_FRESH


def last_start(facts: InstanceFacts, now: datetime) -> datetime:
    """The latest of: its launch, the boot it recorded itself, and trainguard's last remediation or start.

    An OS reboot (sudo reboot, a kernel panic's reboot, a person's console reboot) leaves LaunchTime alone, so the
    instance's own boot record counts too; a record from the future (a wrong clock, a forged tag) does not.
    """
    acted = [entry.at for entry in facts.history if entry.action in (*REMEDIATIONS, Action.STARTED)]
    booted = [facts.recorded_boot] if facts.recorded_boot is not None and facts.recorded_boot <= now else []
    return max([facts.launch_time, *booted, *acted])


def decide(
    facts: InstanceFacts,
    event_fingerprint: str,
    now: datetime,
    settings: RemediationSettings,
    force: bool = False,
    ssh_answering: bool = False,
) -> Decision:
    """Skip, give up, reboot, or escalate to stop/start; `force` lifts the reboot budget only.

    `ssh_answering`: for an agent-heartbeat alarm, whether the canary saw SSH
    answer in the last two minutes (see ssh_answers); agent silence alone then
    does not reboot.
    """
    key, value = settings.managed_tag
    if facts.tags.get(key) != value:
        return Decision(Verdict.SKIP_NOT_MANAGED, f"{facts.instance_id} lacks the tag {key}={value}")
    if facts.state != "running":
        return Decision(
            Verdict.SKIP_NOT_RUNNING,
            f"{facts.instance_id} is {facts.state}; a stopped instance's status metrics go missing, nothing to fix",
        )
    history = facts.history
    if any(entry.fingerprint == event_fingerprint for entry in history):
        return Decision(Verdict.SKIP_DUPLICATE, "this alarm event was already handled")
    started = last_start(facts, now)
    if now - started < settings.boot_grace:
        since = int((now - started).total_seconds())
        return Decision(
            Verdict.SKIP_BOOT_GRACE,
            f"booted or remediated {since}s ago, inside the {int(settings.boot_grace.total_seconds())}s grace period",
        )
    # After the grace check: a booting host's agent is silent for a while, and that is no news.
    if ssh_answering:
        return Decision(
            Verdict.SKIP_SSH_ANSWERS,
            f"the CloudWatch agent is silent, but the SSH canary saw {facts.instance_id} answer within the last "
            f"{int(SSH_FRESH.total_seconds() // 60)} minutes: the agent needs a look, not the host a reboot",
        )
    recent = [entry for entry in history if entry.action in REMEDIATIONS and now - entry.at < settings.reboot_window]
    window_hours = int(settings.reboot_window.total_seconds() // 3600)
    if len(recent) >= settings.max_reboots and not force:
        newest = recent[-1].at if recent else None
        if any(e.action is Action.GAVE_UP and (newest is None or e.at >= newest) for e in history):
            return Decision(
                Verdict.SKIP_GAVE_UP,
                f"trainguard already gave up on {facts.instance_id} in this window and emailed a person",
            )
        return Decision(
            Verdict.GIVE_UP,
            f"{len(recent)} remediations in the last {window_hours}h (budget {settings.max_reboots}): "
            "a person is needed",
        )
    if recent and not facts.has_instance_store:
        return Decision(
            Verdict.STOP_START,
            f"rebooted {int((now - recent[-1].at).total_seconds() // 60)} min ago and still failing; "
            "a stop/start moves it to other hardware (no instance-store data to lose)",
        )
    reason = "the alarm says the instance is hung"
    if recent:
        reason += "; still failing after a reboot, but stop/start would lose its instance-store data"
    return Decision(Verdict.REBOOT, reason)


def should_start(facts: InstanceFacts, settings: RemediationSettings) -> bool:
    """Start a stopped instance only if it is managed and trainguard's own last act was to stop it.

    The managed tag comes first: on an unmanaged instance the history tag may be
    anything (copied, forged), and trainguard never touches such an instance.
    """
    key, value = settings.managed_tag
    history = facts.history
    return (
        facts.tags.get(key) == value
        and facts.state == "stopped"
        and bool(history)
        and history[-1].action is Action.STOP_START
    )


def relook_at(
    facts: InstanceFacts, decision: Decision, now: datetime, settings: RemediationSettings
) -> datetime | None:
    """When to look at the instance again, because CloudWatch invokes nothing while an alarm stays in ALARM.

    After a boot-grace skip: when the grace period ends. After a remediation:
    one grace period later (both measured as decide() measures them). Otherwise (gave up, skipped for good) never, so a
    person is emailed once, not on every look.
    """
    if decision.verdict.acts:
        return now + settings.boot_grace + RELOOK_MARGIN
    if decision.verdict is Verdict.SKIP_BOOT_GRACE:
        return last_start(facts, now) + settings.boot_grace + RELOOK_MARGIN
    return None


# A minute past the grace period: the next look must find the grace over, and Scheduler's at() has minute precision.
RELOOK_MARGIN = timedelta(minutes=1)


def schedule_name(instance_id: str, alarm_name: str, at: datetime) -> str:
    """A Scheduler name unique per instance, alarm and time, so a duplicate request makes no second look."""
    name = f"trainguard-{instance_id}-{_digest(alarm_name)}-{int(at.timestamp())}"
    if not SCHEDULER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid EventBridge Scheduler name")
    return name


def at_expression(at: datetime) -> str:
    """Scheduler's one-time expression, at(yyyy-mm-ddThh:mm:ss), in UTC (the schedule's time zone)."""
    return f"at({at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')})"


def claim_name(instance_id: str, history: tuple[Entry, ...], stale: tuple[str, ...] = ()) -> str:
    """The SSM parameter that claims the next remediation of this instance.

    Named by the instance and its history as read, not by the alarm: every
    alarm that read the same history races for the same name, and PutParameter
    without Overwrite lets exactly one create it. Once the winner records its
    entry, the history (and so the name) moves on. `stale`: claims found
    abandoned (their holder never recorded), each extends the name so the race
    starts over among those who saw the same.
    """
    generation = str(int(history[-1].at.timestamp())) if history else "0"
    return "/".join((contract.CLAIM_PATH, instance_id, ".".join((generation, *stale))))


def fingerprint(alarm_name: str, state_changed_at: str) -> str:
    """Names one alarm event: a duplicate delivery has the same name and state-change time."""
    return _digest(f"{alarm_name}|{state_changed_at}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
