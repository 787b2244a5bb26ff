"""What the facts mean: is everything watched, is anything frozen or firing (pure).

Each check has a level that doubles as a Nagios state: CRITICAL for a host
that does not answer SSH or an alarm that fires; WARNING for anything that
means trainguard is not watching as it should (an email nobody confirmed, an
alarm without data, a silent canary or agent, a push that stopped, a spent
reboot budget) or that a person should know (workers killed for memory, a
stopped instance); OK otherwise. What could not be read is said, and is not a
warning. The stack's state is the worst; UNKNOWN when no instance was found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthcheck import contract
from healthcheck.overview.facts import SSH_PORT, Alarm, InstanceFacts, StackFacts
from healthcheck.probe.canary import CanaryView
from healthcheck.probe.prober import silent_running_instance
from healthcheck.probe.verdict import Verdict
from healthcheck.remediation.policy import REMEDIATIONS, RemediationSettings
from healthcheck.status import Status, worst

# The canary samples every 10 s and the agent every minute: older than this, they have stopped.
CANARY_STALE = timedelta(minutes=5)
AGENT_STALE = timedelta(minutes=5)
# The push timer runs every 5 minutes: three missed rounds is a push that no longer happens.
PUSH_STALE = timedelta(minutes=15)
INSTANCE_TOPICS = ("ec2", "ssh", "alarms", "canary", "agent", "guard", "reboots", "bundle", "push", "workers")


@dataclass(frozen=True)
class Check:
    """One thing looked at: its level, a few words for the table, and for a person what it means and what to do."""

    topic: str
    level: Status
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceReport:
    facts: InstanceFacts
    checks: tuple[Check, ...]

    @property
    def level(self) -> Status:
        return worst([check.level for check in self.checks])

    def check(self, topic: str) -> Check | None:
        return next((check for check in self.checks if check.topic == topic), None)


@dataclass(frozen=True)
class Report:
    facts: StackFacts
    stack_checks: tuple[Check, ...]
    instances: tuple[InstanceReport, ...]

    @property
    def level(self) -> Status:
        if not self.instances:
            return Status.UNKNOWN
        levels = [check.level for check in self.stack_checks]
        return worst(levels + [instance.level for instance in self.instances])


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, in the unit a person reads fastest."""
    if since is None:
        return "never"
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def judge(facts: StackFacts) -> Report:
    """Every check of the stack and of each instance."""
    settings = facts.function.settings if facts.function else RemediationSettings()
    return Report(
        facts,
        tuple(_stack(facts)),
        tuple(InstanceReport(instance, tuple(_instance(instance, facts, settings))) for instance in facts.instances),
    )


def _stack(facts: StackFacts) -> Iterator[Check]:
    if not facts.instances:
        yield Check(
            "instances",
            Status.UNKNOWN,
            "none found",
            (
                f"no instance tagged {contract.STACK_TAG_KEY}={facts.stack} in {facts.region}: check the stack's "
                "name (--stack) and the region (--region)",
            ),
        )
    yield _email(facts)
    if facts.function is not None:
        settings, active = facts.function.settings, facts.function.state == "Active"
        summary = f"{facts.function.state}: up to {settings.max_reboots} reboots in {_hours(settings)} h"
        yield Check(
            "auto-reboot",
            Status.OK if active else Status.WARNING,
            summary,
            () if active else (f"the auto-reboot function {facts.function.name} is {facts.function.state}",),
        )
    if facts.dlm_state is not None:
        enabled = facts.dlm_state == "ENABLED"
        why = () if enabled else (f"the data volumes' daily snapshot policy is {facts.dlm_state}: no new snapshots",)
        yield Check("snapshots", Status.OK if enabled else Status.WARNING, facts.dlm_state.lower(), why)
    for alarm in facts.stack_alarms:
        if alarm.state == "ALARM":
            yield Check(
                alarm.key,
                Status.WARNING,
                "ALARM",
                (f"{alarm.key} in ALARM since {age(alarm.since, facts.at)}: {alarm.reason}",),
            )


def _email(facts: StackFacts) -> Check:
    if facts.topic_arn is None:
        return Check("email", Status.WARNING, "no topic", ("no alert topic found: nobody would be emailed",))
    if facts.subscriptions is None:
        return Check("email", Status.OK, "could not check")
    if not facts.subscriptions:
        return Check("email", Status.WARNING, "nobody", (f"nobody is subscribed to the alert topic {facts.topic_arn}",))
    pending = [subscription for subscription in facts.subscriptions if not subscription.confirmed]
    confirmed = [subscription for subscription in facts.subscriptions if subscription.confirmed]
    summary = ", ".join(
        [f"{subscription.endpoint} confirmed" for subscription in confirmed]
        + [f"{subscription.endpoint} PENDING" for subscription in pending]
    )
    details = tuple(
        f"alert email to {subscription.endpoint} is not confirmed, so no alarm reaches it: look in that inbox for "
        "'AWS Notification - Subscription Confirmation' and click its link"
        for subscription in pending
    )
    return Check("email", Status.WARNING if pending else Status.OK, summary, details)


def _instance(instance: InstanceFacts, facts: StackFacts, settings: RemediationSettings) -> Iterator[Check]:
    now = facts.at
    yield _ec2(instance, facts.region)
    if instance.state == "running":
        yield _ssh(instance, now)
        yield _canary(instance, now)
        yield _agent(instance, now)
    yield _alarms(instance, now)
    if instance.kills_recent is not None:
        kills = instance.kills_recent
        yield Check(
            "guard",
            Status.WARNING if kills else Status.OK,
            f"{kills} killed (6 h)" if kills else "no kills (6 h)",
            (
                f"the guard killed {kills} worker(s) for memory in the last 6 h: trainguard launch --status on the "
                "instance shows each worker's memory; fewer or smaller workers fit",
            )
            if kills
            else (),
        )
    yield _reboots(instance, now, settings)
    if instance.association is not None:
        yield _bundle(instance, facts.bundle_version)
    if instance.results is not None:
        yield _push(instance, now)
        yield _workers(instance, now)
    for what, why in instance.unavailable.items():
        yield Check(what, Status.OK, "could not check", (f"could not check {what}: {why}",))


def _ec2(instance: InstanceFacts, region: str) -> Check:
    checks = (instance.system_status, instance.instance_status)
    if instance.state == "running" and "impaired" in checks:
        return Check(
            "ec2",
            Status.CRITICAL,
            "checks failing",
            (f"EC2's status checks fail (system {checks[0]}, instance {checks[1]})",),
        )
    if instance.state in ("stopped", "stopping"):
        return Check(
            "ec2",
            Status.WARNING,
            instance.state,
            (
                f"{instance.state}: nothing trains on it and nothing watches it; start it with aws ec2 "
                f"start-instances --instance-ids {instance.instance_id} --region {region}",
            ),
        )
    initializing = " (checks starting)" if "initializing" in checks else ""
    return Check("ec2", Status.OK, instance.state + initializing)


def _ssh(instance: InstanceFacts, now: datetime) -> Check:
    banner = instance.banner
    if banner is None:
        return Check("ssh", Status.OK, "no address")
    if banner.server_id is not None:
        return Check("ssh", Status.OK, f"answers ({banner.seconds:.1f} s)")
    if banner.busy:
        return Check("ssh", Status.WARNING, "busy", (f"sshd turned the connection away: {banner.detail}",))
    verdict, detail = banner.verdict or Verdict.UNREACHABLE, banner.detail
    healthy_to_ec2 = (instance.system_status, instance.instance_status) == ("ok", "ok")
    if verdict is Verdict.UNREACHABLE and healthy_to_ec2:
        judged = silent_running_instance(detail, instance.instance_id, SSH_PORT, _canary_view(instance), now)
        verdict, detail = judged.verdict, judged.detail
    level = Status.WARNING if verdict is Verdict.ADDRESS_NOT_ALLOWED else Status.CRITICAL
    return Check("ssh", level, verdict.value, (f"{verdict.value}: {detail}", f"next: {verdict.next_step}"))


def _canary_view(instance: InstanceFacts) -> CanaryView | None:
    if instance.canary_latest is None:
        return None
    ssh_alarm = next((alarm for alarm in instance.alarms if alarm.key == contract.SSH_ALARM_KEY), None)
    return CanaryView(
        instance.instance_id,
        instance.canary_latest[0],
        instance.canary_latest[1],
        ssh_alarm.name if ssh_alarm else None,
        ssh_alarm.state if ssh_alarm else None,
        ssh_alarm.since if ssh_alarm else None,
    )


def _canary(instance: InstanceFacts, now: datetime) -> Check:
    if instance.canary_latest is None:
        return Check(
            "canary",
            Status.WARNING,
            "silent",
            ("not watched: the SSH canary sent no sample for it in 30 minutes (see its errors alarm and its log)",),
        )
    at, value = instance.canary_latest
    heard = "sshd answered" if value >= 1 else "no banner"
    if now - at > CANARY_STALE:
        return Check(
            "canary",
            Status.WARNING,
            age(at, now),
            (f"not watched: the SSH canary's newest sample is {age(at, now)} ({heard}); it samples every 10 s",),
        )
    if value < 1:
        return Check(
            "canary", Status.WARNING, f"no banner, {age(at, now)}", ("the SSH canary heard no banner from sshd",)
        )
    return Check("canary", Status.OK, age(at, now))


def _agent(instance: InstanceFacts, now: datetime) -> Check:
    latest = instance.agent_latest
    if latest is None or now - latest > AGENT_STALE:
        return Check(
            "agent",
            Status.WARNING,
            "silent" if latest is None else age(latest, now),
            (
                f"not watched: the CloudWatch agent's last report is {age(latest, now)} (it reports every minute); "
                "the memory, disk and heartbeat alarms have nothing to judge",
            ),
        )
    return Check("agent", Status.OK, age(latest, now))


def _alarms(instance: InstanceFacts, now: datetime) -> Check:
    if not instance.alarms:
        return Check(
            "alarms",
            Status.WARNING,
            "none",
            ("no trainguard alarm found for it: nothing would notice a freeze",),
        )
    firing = [alarm for alarm in instance.alarms if alarm.state == "ALARM"]
    # A stopped instance sends nothing: its alarms' missing data is no news.
    blind = [alarm for alarm in instance.alarms if alarm.state == "INSUFFICIENT_DATA" and instance.state == "running"]
    quiet = len(instance.alarms) - len(firing) - len(blind)
    parts = [f"{len(firing)} ALARM"] * bool(firing) + [f"{len(blind)} no data"] * bool(blind) + [f"{quiet} OK"]
    details = [_firing(alarm, now) for alarm in firing]
    details += [_blind(alarm) for alarm in blind]
    level = Status.CRITICAL if firing else Status.WARNING if blind else Status.OK
    return Check("alarms", level, ", ".join(parts), tuple(details))


def _firing(alarm: Alarm, now: datetime) -> str:
    return f"{alarm.key} in ALARM since {age(alarm.since, now)}: {alarm.reason}"


def _blind(alarm: Alarm) -> str:
    return f"{alarm.key}: not watching: no data for {alarm.metric}"


def _hours(settings: RemediationSettings) -> int:
    return int(settings.reboot_window.total_seconds() // 3600)


def _reboots(instance: InstanceFacts, now: datetime, settings: RemediationSettings) -> Check:
    history = instance.history
    recent = [entry for entry in history if entry.action in REMEDIATIONS and now - entry.at < settings.reboot_window]
    used = f"{len(recent)}/{settings.max_reboots}"
    last: tuple[str, ...] = ()
    if history:
        what = history[-1].action.name.lower().replace("_", " ")
        last = (f"the last remediation: {what} {age(history[-1].at, now)}",)
    if len(recent) >= settings.max_reboots:
        return Check(
            "reboots",
            Status.WARNING,
            f"{used} spent",
            (
                f"{len(recent)} reboots in the last {_hours(settings)} h: trainguard will not reboot it again "
                f"until one is older; a person is needed (trainguard reboot --force)",
                *last,
            ),
        )
    return Check("reboots", Status.OK, used, last)


def _bundle(instance: InstanceFacts, stack_version: str | None) -> Check:
    association = instance.association
    assert association is not None
    applied = association.bundle_version or "?"
    if association.status not in ("Success", "Pending", "InProgress"):
        return Check(
            "bundle",
            Status.WARNING,
            f"{applied} {association.status}",
            (f"the last apply of bundle {applied} (State Manager) is {association.status}: the guard may be stale",),
        )
    if stack_version and association.bundle_version and association.bundle_version != stack_version:
        return Check(
            "bundle",
            Status.WARNING,
            f"{applied} (stack: {stack_version})",
            (f"its State Manager association applies bundle {applied}; the stack's is {stack_version}: run pulumi up",),
        )
    return Check("bundle", Status.OK, f"{applied} {association.status}")


def _push(instance: InstanceFacts, now: datetime) -> Check:
    results = instance.results
    assert results is not None
    last = results.last_push_at
    if last is None:
        seen = f"; newest result {age(results.newest_at, now)}" if results.newest_at else ""
        return Check("push", Status.OK, "none yet" if not seen else f"newest {age(results.newest_at, now)}", ())
    if instance.state == "running" and now - last > PUSH_STALE:
        return Check(
            "push",
            Status.WARNING,
            age(last, now),
            (
                f"the last push that ended well was {age(last, now)}, and the push runs every 5 minutes: results "
                "since then exist only on the instance (on it: journalctl -u trainguard-push-results)",
            ),
        )
    return Check("push", Status.OK, age(last, now))


def _workers(instance: InstanceFacts, now: datetime) -> Check:
    results = instance.results
    assert results is not None
    records = results.workers or ()
    folders = dict(results.newest_per_worker)
    details = []
    for record in records:
        folder = record.results_prefix.rstrip("/") or f"{contract.WORKER_DIR_PREFIX}{record.worker}"
        newest = folders.pop(folder, None)
        memory = ""
        if record.memory_peak_bytes is not None:
            limit = f" of {_gib(record.memory_max_bytes)}" if record.memory_max_bytes else ""
            memory = f", memory peak {_gib(record.memory_peak_bytes)}{limit}"
        ended = f" (exit {record.exit_status})" if record.exit_status is not None and record.state != "running" else ""
        details.append(
            f"{folder}: {record.state}{ended} since {record.since}{memory}; newest result {age(newest, now)}"
        )
    details += [f"{folder}: newest result {age(at, now)}" for folder, at in sorted(folders.items())]
    if not records:
        return Check("workers", Status.OK, "no record", tuple(details))
    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    summary = ", ".join(f"{count} {state.replace('_', '-')}" for state, count in counts.items())
    return Check("workers", Status.OK, summary, tuple(details))


def _gib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**30:.1f} GiB"
