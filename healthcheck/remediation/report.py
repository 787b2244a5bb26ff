"""The email a person reads after a remediation, and the log line per decision (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from healthcheck.remediation.events import Trigger
from healthcheck.remediation.policy import Decision, Verdict

CONSOLE_LINES = 30
MAX_SUBJECT = 100  # SNS refuses longer email subjects


@dataclass(frozen=True)
class Step:
    """One step of the sequence as it ran; a skipped step (not configured) neither ran nor failed."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("done" if self.ok else "FAILED")


@dataclass(frozen=True)
class Outcome:
    """Everything a remediation decided and did, for the email, the log and the CLI."""

    instance_id: str
    trigger: Trigger
    decision: Decision
    fingerprint: str
    at: str
    steps: tuple[Step, ...] = ()
    snapshot_ids: tuple[str, ...] = ()
    postmortem: str | None = None
    console_tail: tuple[str, ...] = ()
    availability_zone: str | None = None
    region: str | None = None  # named in every command the email prints, so a laptop set to another region works
    extra: dict[str, str] = field(default_factory=dict)


def subject(outcome: Outcome) -> str:
    verb = {
        Verdict.REBOOT: "rebooted",
        Verdict.STOP_START: "stopping and starting",
        Verdict.GIVE_UP: "NOT rebooting (budget spent)",
        Verdict.SKIP_SSH_ANSWERS: "NOT rebooting (agent silent, SSH answers)",
    }.get(outcome.decision.verdict, outcome.decision.verdict.value)
    return f"trainguard: {verb} {outcome.instance_id} after {outcome.trigger.name}"[:MAX_SUBJECT]


def body(outcome: Outcome) -> str:
    iid = outcome.instance_id
    region = f" --region {outcome.region}" if outcome.region else ""
    lines = [
        f"What fired: {outcome.trigger.summary}.",
        f"Why: {outcome.trigger.reason or 'no reason given'}",
        "",
        f"What trainguard decided: {outcome.decision.verdict.value}: {outcome.decision.reason}.",
        "What trainguard did:",
    ]
    lines += [f"  - {step.name}: {step.status}, {step.detail}" for step in outcome.steps]
    if not outcome.steps:
        lines.append("  - nothing to the instance.")
    if outcome.decision.verdict is Verdict.GIVE_UP:
        lines += [
            "",
            "A person is needed: trainguard will not reboot this instance again in this window,",
            "and will not email again about it in this window.",
        ]
    if outcome.decision.verdict is Verdict.SKIP_SSH_ANSWERS:
        lines += [
            "",
            "The host answers SSH, so trainguard leaves it running. Look at the agent:",
            f"  ssh {iid} sudo systemctl status amazon-cloudwatch-agent",
        ]
    lines += ["", f"Last {CONSOLE_LINES} lines of the console:"]
    lines += [f"  | {line}" for line in outcome.console_tail] or ["  (not captured)"]
    lines += [
        "",
        "Next:",
        f"  trainguard probe {iid}{region}",
    ]
    if outcome.postmortem:
        lines.append(f"  Post-mortem files: {outcome.postmortem}")
    if outcome.snapshot_ids:
        zone = outcome.availability_zone or "<its zone>"
        lines += [
            "  To restore a volume from a snapshot:",
            f"    aws ec2 create-volume --snapshot-id {outcome.snapshot_ids[0]} --availability-zone {zone}"
            f" --volume-type gp3 --encrypted{region}",
            f"    aws ec2 attach-volume --volume-id <new-volume> --instance-id {iid} --device /dev/sdg{region}",
        ]
    lines += [f"  Reboot by hand: trainguard reboot {iid}{region} --reason '...'"]
    return "\n".join(lines) + "\n"


def log_line(outcome: Outcome) -> str:
    """One structured JSON line per decision."""
    return json.dumps(
        {
            "event": "trainguard.remediation",
            "instance_id": outcome.instance_id,
            "alarm": outcome.trigger.name,
            "alarm_state": outcome.trigger.alarm.state if outcome.trigger.alarm else None,
            "fingerprint": outcome.fingerprint,
            "decision": outcome.decision.verdict.name,
            "reason": outcome.decision.reason,
            "steps": [{"name": s.name, "status": s.status, "detail": s.detail} for s in outcome.steps],
            "snapshot_ids": list(outcome.snapshot_ids),
            "postmortem": outcome.postmortem,
            "at": outcome.at,
        },
        sort_keys=True,
    )
