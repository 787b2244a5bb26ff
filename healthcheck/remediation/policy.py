"""When to reboot a hung instance, and when not to: a pure decision over facts, history, time and settings.

The history lives on the instance itself, in one tag, so no database is needed:
`trainguard:remediations` holds up to ten entries `EPOCH:ACTION:FINGERPRINT`,
newest last, where the fingerprint names the alarm event that caused it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

HISTORY_TAG = "trainguard:remediations"
MAX_HISTORY = 10  # ten entries of ~22 characters fit EC2's 256-character tag values


class RemediationConfigError(ValueError):
    """An environment variable the remediation reads is malformed; the message names it and the fix."""


def managed_tag(environ: Mapping[str, str]) -> tuple[str, str]:
    """TRAINGUARD_MANAGED_TAG (`key=value`, default trainguard:managed=true): what marks an instance as ours."""
    tag = environ.get("TRAINGUARD_MANAGED_TAG", "trainguard:managed=true")
    key, equals, value = tag.partition("=")
    if not equals or not key:
        raise RemediationConfigError(f"TRAINGUARD_MANAGED_TAG={tag!r}: expected key=value")
    return key, value


@dataclass(frozen=True)
class RemediationSettings:
    topic_arn: str | None = None
    bucket: str | None = None
    managed_tag: tuple[str, str] = ("trainguard:managed", "true")
    max_reboots: int = 3
    reboot_window: timedelta = timedelta(hours=6)
    boot_grace: timedelta = timedelta(seconds=600)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RemediationSettings:
        """Settings from TRAINGUARD_* variables (documented in the README)."""

        def number(name: str, default: int, low: int) -> int:
            text = environ.get(name, "").strip()
            if not text:
                return default
            if not text.isdigit() or int(text) < low:
                raise RemediationConfigError(f"{name}={text!r}: expected a whole number >= {low}")
            return int(text)

        return cls(
            topic_arn=environ.get("TRAINGUARD_TOPIC_ARN") or None,
            bucket=environ.get("TRAINGUARD_BUCKET") or None,
            managed_tag=managed_tag(environ),
            max_reboots=number("TRAINGUARD_MAX_REBOOTS", 3, 0),
            reboot_window=timedelta(hours=number("TRAINGUARD_REBOOT_WINDOW_HOURS", 6, 1)),
            boot_grace=timedelta(seconds=number("TRAINGUARD_BOOT_GRACE_SECONDS", 600, 0)),
        )


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
        except ValueError:
            continue
    return tuple(entries)


def encode_history(entries: tuple[Entry, ...]) -> str:
    return " ".join(entry.encode() for entry in entries[-MAX_HISTORY:])


def fingerprint(alarm_name: str, state_changed_at: str) -> str:
    """Names one alarm event: a duplicate delivery has the same name and state-change time."""
    return hashlib.sha256(f"{alarm_name}|{state_changed_at}".encode()).hexdigest()[:8]


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
        return decode_history(self.tags.get(HISTORY_TAG))


class Verdict(enum.Enum):
    """The decision, and whether it acts on the instance."""

    SKIP_NOT_MANAGED = "skip: not managed"
    SKIP_NOT_RUNNING = "skip: not running"
    SKIP_BOOT_GRACE = "skip: inside the boot grace period"
    SKIP_DUPLICATE = "skip: duplicate"
    GIVE_UP = "give up: reboot budget exhausted"
    REBOOT = "reboot"
    STOP_START = "escalate to stop/start"

    @property
    def acts(self) -> bool:
        return self in (Verdict.REBOOT, Verdict.STOP_START)


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


def decide(
    facts: InstanceFacts,
    event_fingerprint: str,
    now: datetime,
    settings: RemediationSettings,
    force: bool = False,
) -> Decision:
    """Skip, give up, reboot, or escalate to stop/start; `force` lifts the reboot budget only."""
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
    acted = [entry for entry in history if entry.action in (Action.REBOOT, Action.STOP_START, Action.STARTED)]
    last_boot = max([facts.launch_time, *(entry.at for entry in acted)])
    if now - last_boot < settings.boot_grace:
        since = int((now - last_boot).total_seconds())
        return Decision(
            Verdict.SKIP_BOOT_GRACE,
            f"booted or remediated {since}s ago, inside the {int(settings.boot_grace.total_seconds())}s grace period",
        )
    recent = [
        entry for entry in acted if entry.action is not Action.STARTED and now - entry.at < settings.reboot_window
    ]
    window_hours = int(settings.reboot_window.total_seconds() // 3600)
    if len(recent) >= settings.max_reboots and not force:
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
