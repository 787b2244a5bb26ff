"""What the facts mean: is everything watched, is anything frozen or firing (pure).

Each check has a level that doubles as a Nagios state: CRITICAL for an
instance that does not answer SSH, fails its status checks, or has an alarm
firing; WARNING for anything that means trainguard is not watching as it
should (an email nobody confirmed, an alarm without data, a silent canary or
agent, a push that stopped, a spent reboot budget, the canary function
failing) or that a person should know (workers killed for memory, a stopped
instance, a port silent from here that nothing confirms frozen); OK otherwise.
What could not be read is said, with why, and is neither a warning nor taken
as bad news: a silent port is judged HUNG only when the canary heard nothing
either, so status never advises rebooting a host it could not judge. The
stack's state is the worst; UNKNOWN when no instance was found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthcheck import contract
from healthcheck.overview.facts import (
    ALARMS,
    BUNDLE,
    METRICS,
    RESULTS,
    SSH,
    SSH_PORT,
    SUBSCRIPTIONS,
    Alarm,
    InstanceFacts,
    StackFacts,
)
from healthcheck.probe.canary import CanaryView
from healthcheck.probe.prober import silent_running_instance
from healthcheck.probe.verdict import Verdict
from healthcheck.remediation.policy import REMEDIATIONS, Action, RemediationSettings
from healthcheck.status import Status, worst

# The canary samples every 10 s and the agent every minute: older than this, they have stopped.
CANARY_STALE = timedelta(minutes=5)
AGENT_STALE = timedelta(minutes=5)
# The push timer runs every 5 minutes: three missed rounds is a push that no longer happens.
PUSH_STALE = timedelta(minutes=15)
INSTANCE_TOPICS = ("ec2", "ssh", "alarms", "canary", "agent", "guard", "reboots", "bundle", "push", "workers")
COULD_NOT_CHECK = "could not check"


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


def _unread(topic: str, why: str) -> Check:
    return Check(topic, Status.OK, COULD_NOT_CHECK, (f"could not check {topic}: {why}",))


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
    if facts.missing:
        yield Check(
            "instances",
            Status.WARNING,
            f"{len(facts.missing)} gone",
            (
                f"the stack's outputs name {', '.join(facts.missing)}, which EC2 no longer knows: pulumi refresh, "
                "then pulumi up, puts the stack back in step",
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
        stopped = f"the data volumes' daily snapshot policy is {facts.dlm_state}: no new snapshots"
        yield Check(
            "snapshots",
            Status.OK if enabled else Status.WARNING,
            facts.dlm_state.lower(),
            () if enabled else (stopped,),
        )
    for alarm in facts.stack_alarms:
        if alarm.state == "ALARM":
            # The canary function failing: nothing watches SSH, which is a warning, as an alarm without data is.
            yield Check(alarm.key, Status.WARNING, "ALARM", (_firing(alarm, facts.at),))
    for what, reason in facts.unavailable.items():
        if what != SUBSCRIPTIONS:  # said in the email check
            yield _unread(what, reason)


def _email(facts: StackFacts) -> Check:
    if facts.topic_arn is None:
        if ALARMS in facts.unavailable:
            return Check("email", Status.OK, COULD_NOT_CHECK, ("the alert topic is named by the alarms, unread",))
        return Check("email", Status.WARNING, "no topic", ("no alert topic found: nobody would be emailed",))
    if facts.subscriptions is None:
        return _unread("email", facts.unavailable.get(SUBSCRIPTIONS, "no answer"))
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
    now, unread = facts.at, instance.unavailable
    metrics_read = METRICS not in facts.unavailable
    yield _ec2(instance, facts.region)
    if instance.state == "running":
        yield _unread("ssh", unread[SSH]) if SSH in unread else _ssh(instance, facts)
        yield _canary(instance, now) if metrics_read else _unread("canary", "the metrics were not read")
        yield _agent(instance, now) if metrics_read else _unread("agent", "the metrics were not read")
    yield _alarms(instance, now) if ALARMS not in facts.unavailable else _unread("alarms", facts.unavailable[ALARMS])
    if instance.kills_recent is not None:
        yield _kills(instance.kills_recent)
    yield _reboots(instance, now, settings)
    if BUNDLE in unread:
        yield _unread("bundle", unread[BUNDLE])
    elif instance.association is not None:
        yield _bundle(instance, facts.bundle_version)
    if RESULTS in unread:
        yield _unread("push", unread[RESULTS])
    elif instance.results is not None:
        yield _push(instance, now)
        yield _workers(instance, now)


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
    if instance.state in ("shutting-down", "terminated"):
        return Check(
            "ec2",
            Status.WARNING,
            instance.state,
            (f"{instance.state}, yet the stack's outputs still name it: pulumi up replaces it",),
        )
    initializing = " (checks starting)" if "initializing" in checks else ""
    return Check("ec2", Status.OK, instance.state + initializing)


def _ssh(instance: InstanceFacts, facts: StackFacts) -> Check:
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
        return _silent_port(instance, facts, detail)
    return Check("ssh", Status.CRITICAL, verdict.value, (f"{verdict.value}: {detail}", f"next: {verdict.next_step}"))


def _silent_port(instance: InstanceFacts, facts: StackFacts, detail: str) -> Check:
    """A port that gives this laptop no answer while EC2 calls the instance healthy: what the canary heard, from
    inside the VPC, tells a frozen sshd (HUNG) from an address the security group drops; without it, nothing
    can be told, and nothing is advised that a healthy host would suffer."""
    now, view = facts.at, _canary_view(instance)
    if view is not None and (view.heard_sshd(now) or view.heard_nothing(now)):
        if instance.public_ip is None and view.heard_sshd(now):
            return Check(
                "ssh",
                Status.WARNING,
                "silent (private)",
                (
                    f"no answer from its private address {instance.private_ip} ({detail}), while the canary hears "
                    "sshd: this laptop does not reach the VPC (a VPN or a bastion does)",
                ),
            )
        judged = silent_running_instance(detail, instance.instance_id, SSH_PORT, view, now)
        verdict = judged.verdict
        level = Status.WARNING if verdict is Verdict.ADDRESS_NOT_ALLOWED else Status.CRITICAL
        return Check("ssh", level, verdict.value, (f"{verdict.value}: {judged.detail}", f"next: {verdict.next_step}"))
    why = (
        f"its samples could not be read ({facts.unavailable[METRICS]})"
        if METRICS in facts.unavailable
        else f"its newest sample is {age(view.latest_at, now)}"
        if view is not None
        else "it has no sample of it in 30 minutes"
    )
    return Check(
        "ssh",
        Status.WARNING,
        "silent",
        (
            f"no SSH banner from here ({detail}) while EC2 calls it healthy, and the SSH canary cannot tell a frozen "
            f"sshd from a security group dropping this address: {why}; its SSH alarm decides (see alarms)",
        ),
    )


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
            "alarms", Status.WARNING, "none", ("no trainguard alarm found for it: nothing would notice a freeze",)
        )
    running = instance.state == "running"
    firing = [alarm for alarm in instance.alarms if alarm.state == "ALARM"]
    blind = [alarm for alarm in instance.alarms if alarm.state == "INSUFFICIENT_DATA"]
    quiet = len(instance.alarms) - len(firing) - len(blind)
    # A stopped instance sends nothing: its alarms' missing data is no news.
    no_data = f"{len(blind)} no data" + ("" if running else " (stopped)")
    parts = [f"{len(firing)} ALARM"] * bool(firing) + [no_data] * bool(blind) + [f"{quiet} OK"]
    details = [_firing(alarm, now) for alarm in firing]
    if running:
        details += [f"{alarm.key}: not watching: no data for {alarm.metric}" for alarm in blind]
    level = Status.CRITICAL if firing else Status.WARNING if blind and running else Status.OK
    return Check("alarms", level, ", ".join(parts), tuple(details))


def _firing(alarm: Alarm, now: datetime) -> str:
    return f"{alarm.key} in ALARM since {age(alarm.since, now)}: {alarm.reason}"


def _kills(kills: int) -> Check:
    if not kills:
        return Check("guard", Status.OK, "no kills (6 h)")
    return Check(
        "guard",
        Status.WARNING,
        f"{kills} killed (6 h)",
        (
            f"the guard killed {kills} worker(s) for memory in the last 6 h: trainguard launch --status on the "
            "instance shows each worker's memory; fewer or smaller workers fit",
        ),
    )


def _hours(settings: RemediationSettings) -> int:
    return int(settings.reboot_window.total_seconds() // 3600)


def _reboots(instance: InstanceFacts, now: datetime, settings: RemediationSettings) -> Check:
    history = instance.history
    remediations = [entry for entry in history if entry.action in REMEDIATIONS]
    recent = [entry for entry in remediations if now - entry.at < settings.reboot_window]
    used = f"{len(recent)}/{settings.max_reboots}"
    said: tuple[str, ...] = ()
    if remediations:
        what = remediations[-1].action.name.lower().replace("_", " ")
        said = (f"the last remediation: {what} {age(remediations[-1].at, now)}",)
    gave_up = [entry for entry in history if entry.action is Action.GAVE_UP]
    if gave_up:
        said += (f"the auto-reboot function last gave up {age(gave_up[-1].at, now)} (its budget was spent)",)
    if len(recent) >= settings.max_reboots:
        return Check(
            "reboots",
            Status.WARNING,
            f"{used} spent",
            (
                f"{len(recent)} reboots in the last {_hours(settings)} h: trainguard will not reboot it again "
                f"until one is older; a person is needed (trainguard reboot --force)",
                *said,
            ),
        )
    return Check("reboots", Status.OK, used, said)


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
        newest = results.newest_at
        return Check("push", Status.OK, f"newest {age(newest, now)}" if newest else "none yet")
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
    if not results.listed_all:
        details.append("(the bucket's listing stopped after 20,000 objects: a newer result may exist)")
    if not records:
        return Check("workers", Status.OK, "no record", tuple(details))
    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    summary = ", ".join(f"{count} {state.replace('_', '-')}" for state, count in counts.items())
    return Check("workers", Status.OK, summary, tuple(details))


def _gib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**30:.1f} GiB"
