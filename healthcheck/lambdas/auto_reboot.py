"""Auto-reboot: recover an instance an alarm says is hung, safely, and tell a person.

Handler: healthcheck.lambdas.auto_reboot.handler. Configured by TRAINGUARD_*
environment variables (see the README). Acts only on ALARM; a malformed or
unknown event is logged and returned from, never raised, since a raised error
is retried.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from healthcheck.remediation.actions import Clients, InstanceNotFound, Remediator
from healthcheck.remediation.events import AlarmEvent, StoppedEvent, parse
from healthcheck.remediation.policy import RemediationSettings
from healthcheck.remediation.report import log_line

log = logging.getLogger("trainguard.auto_reboot")
log.setLevel(logging.INFO)


def handler(event: Any, context: Any, remediator: Remediator | None = None) -> dict[str, Any]:
    """Handle one delivery; returns a summary (for tests and the Lambda console), never raises on bad events."""
    remediator = remediator or Remediator(RemediationSettings.from_environment(os.environ), Clients())
    events, problems = parse(event)
    for problem in problems:
        log.warning(json.dumps({"event": "trainguard.ignored", "problem": problem}))
    handled: list[dict[str, Any]] = []
    for item in events:
        if isinstance(item, StoppedEvent):
            step = remediator.handle_stopped(item.instance_id)
            handled.append({"instance_id": item.instance_id, "decision": "START" if step else "IGNORE"})
            continue
        handled.append(_handle_alarm(remediator, item))
    return {"handled": handled, "ignored": problems}


def _handle_alarm(remediator: Remediator, event: AlarmEvent) -> dict[str, Any]:
    if event.state != "ALARM":
        log.info(json.dumps({"event": "trainguard.ignored", "alarm": event.alarm_name, "state": event.state}))
        return {"instance_id": event.instance_id, "decision": "IGNORE", "reason": f"state {event.state}"}
    try:
        outcome = remediator.handle_alarm(event)
    except InstanceNotFound:
        log.warning(json.dumps({"event": "trainguard.ignored", "problem": f"no instance {event.instance_id}"}))
        return {"instance_id": event.instance_id, "decision": "IGNORE", "reason": "no such instance"}
    log.info(log_line(outcome))
    return {
        "instance_id": outcome.instance_id,
        "decision": outcome.decision.verdict.name,
        "reason": outcome.decision.reason,
        "snapshot_ids": list(outcome.snapshot_ids),
    }
