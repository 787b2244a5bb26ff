"""Auto-reboot: recover an instance an alarm says is hung, safely and in time, and tell a person.

Handler: healthcheck.lambdas.auto_reboot.handler. Configured by TRAINGUARD_*
environment variables (docs/auto-reboot.md). Acts only on ALARM. It never
raises: a malformed or unknown event is logged and returned from, and an event
whose handling fails is logged and reported to the topic, since a raised error
is retried (and a retried remediation is a second reboot). A look again that
the function itself scheduled (events.RELOOK_SOURCE) comes back here too, and
so do the stack's daily sweep and its own invocation on `pulumi up` and
`pulumi destroy`.

Every AWS call is bounded by FUNCTION_LIMITS, and the evidence shares the
invocation's remaining time (healthcheck.remediation.actions.Invocation), so
the reboot is made inside TIMEOUT_S even when every evidence call hangs until
its timeout.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any

from healthcheck import aws
from healthcheck.remediation.actions import Clients, InstanceNotFound, Invocation, Remediator, worst_call_s
from healthcheck.remediation.events import AlarmEvent, Event, StackChange, StoppedEvent, SweepEvent, parse
from healthcheck.remediation.policy import RemediationConfigError, RemediationSettings
from healthcheck.remediation.report import log_line

log = logging.getLogger("trainguard.auto_reboot")
log.setLevel(logging.INFO)

# Each call: 2 s to connect, 5 s to read, 2 attempts (one retry): at worst 15 s (actions.worst_call_s).
FUNCTION_LIMITS = aws.Limits(connect_s=2.0, read_s=5.0, attempts=2, pool=4)
# Calls before the evidence, at most: the instance, its type, the canary's metric (agent-heartbeat alarms), the
# claim, a claim found (a race), and the history read again after winning.
CALLS_BEFORE_EVIDENCE = 6
# The function's timeout (the stack sets it): the calls before the evidence and the recovery with its record
# (actions.RESERVED_CALLS) all fit at their worst, with room for the evidence in any real case.
TIMEOUT_S = 120


def calls_fit(timeout_s: float, limits: aws.Limits, calls: int) -> bool:
    """Whether `calls` calls, each at its worst under `limits`, fit in `timeout_s` (pure)."""
    return calls * worst_call_s(limits) <= timeout_s


def handler(event: Any, context: Any, remediator: Remediator | None = None) -> dict[str, Any]:
    """Handle one delivery; returns a summary (for tests and the Lambda console), never raises."""
    if remediator is None:
        try:
            settings = RemediationSettings.from_environment(os.environ)
        except RemediationConfigError as error:
            log.error(json.dumps({"event": "trainguard.misconfigured", "problem": str(error)}))  # noqa: TRY400
            return {"handled": [], "ignored": [], "failed": [str(error)]}
        # The function's own ARN, for the schedules that invoke it again.
        settings = replace(settings, function_arn=getattr(context, "invoked_function_arn", None))
        remediator = Remediator(settings, Clients(limits=FUNCTION_LIMITS), invocation=Invocation.of(context))
    events, problems = parse(event)
    for problem in problems:
        log.warning(json.dumps({"event": "trainguard.ignored", "problem": problem}))
    handled: list[dict[str, Any]] = []
    for item in events:
        try:
            handled.append(_handle(remediator, item))
        except Exception as error:  # noqa: BLE001 - never raise (see the module docstring); a person is told
            handled.append(_failed(remediator, item, error))
    return {"handled": handled, "ignored": problems}


def _handle(remediator: Remediator, item: Event) -> dict[str, Any]:
    if isinstance(item, SweepEvent):
        swept = remediator.sweep()
        log.info(json.dumps({"event": "trainguard.sweep", **swept}))
        return {"decision": "SWEEP", **swept}
    if isinstance(item, StackChange):
        forgotten = remediator.forget_instances(item.gone)
        log.info(json.dumps({"event": "trainguard.stack", "action": item.action, "claims_deleted": forgotten}))
        return {"decision": "FORGET", "instances": list(item.gone), "claims_deleted": forgotten}
    if isinstance(item, StoppedEvent):
        try:
            step = remediator.handle_stopped(item.instance_id)
        except InstanceNotFound:
            return _no_such_instance(item.instance_id)
        return {"instance_id": item.instance_id, "decision": "START" if step else "IGNORE"}
    if item.state != "ALARM":
        log.info(json.dumps({"event": "trainguard.ignored", "alarm": item.alarm_name, "state": item.state}))
        return {"instance_id": item.instance_id, "decision": "IGNORE", "reason": f"state {item.state}"}
    try:
        outcome = remediator.handle_alarm(item)
    except InstanceNotFound:
        return _no_such_instance(item.instance_id)
    log.info(log_line(outcome))
    return {
        "instance_id": outcome.instance_id,
        "decision": outcome.decision.verdict.name,
        "reason": outcome.decision.reason,
        "snapshot_ids": list(outcome.snapshot_ids),
    }


def _no_such_instance(instance_id: str) -> dict[str, Any]:
    log.warning(json.dumps({"event": "trainguard.ignored", "problem": f"no instance {instance_id}"}))
    return {"instance_id": instance_id, "decision": "IGNORE", "reason": "no such instance"}


def _failed(remediator: Remediator, item: Event, error: Exception) -> dict[str, Any]:
    problem = f"{type(error).__name__}: {error}"
    if isinstance(item, SweepEvent | StackChange):
        # Tidying: nothing is hung, and tomorrow's sweep tries again; the log line is the record.
        log.error(json.dumps({"event": "trainguard.failed", "tidying": type(item).__name__, "problem": problem}))
        return {"decision": "ERROR", "reason": problem}
    log.error(json.dumps({"event": "trainguard.failed", "instance_id": item.instance_id, "problem": problem}))
    what = f"{item.alarm_name} ({item.state})" if isinstance(item, AlarmEvent) else "its stopped event"
    try:
        remediator.report_failure(item.instance_id, what, error)
    except Exception as report_error:  # noqa: BLE001 - the log line above already has the cause
        log.error(json.dumps({"event": "trainguard.failed", "problem": f"could not email: {report_error}"}))  # noqa: TRY400
    return {"instance_id": item.instance_id, "decision": "ERROR", "reason": problem}
