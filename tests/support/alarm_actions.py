"""What moto leaves out of CloudWatch: an alarm whose state changes runs its actions.

moto records a state change and runs nothing. While `AlarmActions` is active, a moto alarm (of the server
in this process) entering ALARM or OK publishes CloudWatch's notification to each SNS topic among that
state's actions, as CloudWatch does (a queue subscribed to the topic then receives it), and records every
Lambda function it would have invoked. Tests then see what an alarm would reach: an inbox, and which
functions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moto.cloudwatch.models import Alarm
from moto.core.utils import utcnow
from moto.sns.models import sns_backends


@dataclass(frozen=True)
class Invocation:
    function_arn: str
    alarm_name: str
    state: str


@dataclass
class AlarmActions:
    """What alarms did while active: each notification published, each function that would have run."""

    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (topic ARN, the message)
    invoked: list[Invocation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, alarm: Alarm, old_state: str) -> None:
        state = alarm.state_value
        actions = {"ALARM": alarm.alarm_actions, "OK": alarm.ok_actions}.get(state, [])
        if not alarm.actions_enabled or state == old_state:
            return
        for action in actions:
            arn = action.split(":")
            if arn[2] == "sns":
                message = {
                    "AlarmName": alarm.name,
                    "AlarmDescription": alarm.description,
                    "NewStateValue": state,
                    "NewStateReason": alarm.state_reason,
                    "OldStateValue": old_state,
                    "StateChangeTime": utcnow().isoformat(),
                    "Region": alarm.region_name,
                }
                topic = sns_backends[arn[4]][arn[3]].topics[action]
                topic.publish(json.dumps(message), subject=f'{state}: "{alarm.name}" in {alarm.region_name}')
                with self._lock:
                    self.published.append((action, message))
            elif arn[2] == "lambda":
                with self._lock:
                    self.invoked.append(Invocation(action, alarm.name, state))


@contextmanager
def alarm_actions() -> Iterator[AlarmActions]:
    """While inside, moto's alarms run their SNS actions and record their Lambda ones."""
    actions = AlarmActions()
    original = Alarm.update_state

    def update_state(alarm: Alarm, reason: str, reason_data: str, state_value: str) -> None:
        old_state = alarm.state_value
        original(alarm, reason, reason_data, state_value)
        actions.run(alarm, old_state)

    Alarm.update_state = update_state  # type: ignore[method-assign]
    try:
        yield actions
    finally:
        Alarm.update_state = original  # type: ignore[method-assign]
