"""Events the auto-reboot function accepts, turned into one shape (pure).

- the CloudWatch alarm Lambda action: alarmData.state.value and
  alarmData.configuration.metrics[].metricStat.metric.dimensions.InstanceId;
- the classic alarm message wrapped by SNS: Records[].Sns.Message (JSON) with
  NewStateValue and Trigger.Dimensions;
- EventBridge's "EC2 Instance State-change Notification", which tells the
  function that an instance it stopped can be started again;
- trainguard's own look again (RELOOK_SOURCE), which EventBridge Scheduler
  delivers when a grace period ends, carrying the original alarm;
- the stack's daily sweep (SWEEP_SOURCE), which deletes the evidence past its
  expiry and the claims nobody can race for any more;
- the stack's own invocation on `pulumi up` and `pulumi destroy` (STACK_SOURCE,
  Pulumi's Lambda invocation with its lifecycle key), which names the instances
  whose claims can go.

Anything else is reported as a problem, never raised: CloudWatch and Lambda
retry a function that raises, and a junk event would be retried for nothing.
An instance id must look like one (i- and 8 or 17 hex digits), so no later
call is made with a number, a null or a name that is not an id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from healthcheck.contract import is_instance_id

RELOOK_SOURCE = "trainguard.relook"
SWEEP_SOURCE = "trainguard.sweep"
STACK_SOURCE = "trainguard.stack"
# The key Pulumi's (and Terraform's) Lambda invocation adds with lifecycle_scope CRUD: {"action", "prev_input"}.
LIFECYCLE_KEY = "tf"


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm state change for one instance."""

    alarm_name: str
    state: str
    instance_id: str
    changed_at: str
    reason: str
    look_at: str = ""  # set on a look again: when it was scheduled for
    schedule: str = ""  # the one-time schedule that delivered the look

    @property
    def is_relook(self) -> bool:
        return bool(self.look_at)

    @property
    def trigger(self) -> Trigger:
        return Trigger(self.alarm_name, self.instance_id, self.changed_at, self.reason, alarm=self)


@dataclass(frozen=True)
class Trigger:
    """What asked for a remediation: an alarm that changed state, or a person (`trainguard reboot`)."""

    name: str  # the alarm's name, or who asked
    instance_id: str
    at: str  # when the alarm changed state, or when the person asked
    reason: str
    alarm: AlarmEvent | None = None  # the alarm event itself, which a look again brings back

    @property
    def summary(self) -> str:
        if self.alarm is None:
            return f"{self.name} asked for it at {self.at}"
        return f"{self.name} went to {self.alarm.state} at {self.at}"


def relook_payload(event: AlarmEvent, look_at: str, schedule: str) -> dict[str, Any]:
    """What the one-time schedule sends the function: the original alarm, and when and by what it looks."""
    alarm = {key: value for key, value in asdict(event).items() if key not in ("look_at", "schedule")}
    return {"source": RELOOK_SOURCE, "alarm": alarm, "look_at": look_at, "schedule": schedule}


class EventError(ValueError):
    """A value in the event is not what the function needs."""


@dataclass(frozen=True)
class StoppedEvent:
    """EC2 reports an instance stopped."""

    instance_id: str
    at: str


@dataclass(frozen=True)
class SweepEvent:
    """The daily sweep: delete remediation snapshots past their expiry, and claims left from long ago."""


@dataclass(frozen=True)
class StackChange:
    """The stack created, updated or destroyed its instances: the claims of those it no longer has can go."""

    action: str
    gone: tuple[str, ...]


def stack_payload(instance_ids: list[str]) -> dict[str, Any]:
    """What the stack's invocation sends: its instances (Pulumi adds the lifecycle key)."""
    return {"source": STACK_SOURCE, "instance_ids": instance_ids}


Event = AlarmEvent | StoppedEvent | SweepEvent | StackChange


def parse(event: Any) -> tuple[list[Event], list[str]]:
    """The events in a Lambda payload, and what could not be understood."""
    if not isinstance(event, dict):
        return [], [f"payload is {type(event).__name__}, not an object"]
    if event.get("source") == RELOOK_SOURCE:
        return _from_relook(event)
    if event.get("source") == SWEEP_SOURCE:
        return [SweepEvent()], []
    if event.get("source") == STACK_SOURCE:
        return _from_stack(event)
    if "alarmData" in event:
        return _from_lambda_action(event)
    if "Records" in event:
        return _from_sns_records(event["Records"])
    if event.get("detail-type") == "EC2 Instance State-change Notification":
        return _from_state_change(event)
    return [], [f"unknown event with keys {sorted(map(str, event))[:8]}"]


def instance_id(value: Any) -> str:
    """The value if it is an instance id; an EventError naming it otherwise."""
    if not is_instance_id(value):
        raise EventError(f"InstanceId {_short(value)} is not an instance id (i- and 8 or 17 hex digits)")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any) -> str:
    """A string field: strings as they are; anything else (a number, a null) as JSON would write it."""
    return value if isinstance(value, str) else json.dumps(value, default=str)[:256]


def _from_lambda_action(event: dict[str, Any]) -> tuple[list[Event], list[str]]:
    try:
        data = event["alarmData"]
        state = data["state"]
        metrics = data.get("configuration", {}).get("metrics", [])
        instance_ids = {
            metric["metricStat"]["metric"]["dimensions"]["InstanceId"]
            for metric in metrics
            if "InstanceId" in metric.get("metricStat", {}).get("metric", {}).get("dimensions", {})
        }
        if len(instance_ids) != 1:
            return [], [f"alarm {_short(data.get('alarmName'))} names {len(instance_ids)} instances, expected one"]
        return [
            AlarmEvent(
                alarm_name=_text(data["alarmName"]),
                state=_text(state["value"]),
                instance_id=instance_id(instance_ids.pop()),
                changed_at=_text(state.get("timestamp") or event.get("time", "")),
                reason=_text(state.get("reason", "")),
            )
        ], []
    except EventError as error:
        return [], [f"alarm action payload: {error}"]
    except (KeyError, TypeError, AttributeError) as error:
        return [], [f"malformed alarm action payload: missing or wrong {type(error).__name__}: {_short(error)}"]


def _from_sns_records(records: Any) -> tuple[list[Event], list[str]]:
    events: list[Event] = []
    problems: list[str] = []
    if not isinstance(records, list):
        return [], ["Records is not a list"]
    for number, record in enumerate(records):
        try:
            message = json.loads(record["Sns"]["Message"])
            dimensions = {d["name"]: d["value"] for d in message["Trigger"]["Dimensions"]}
            events.append(
                AlarmEvent(
                    alarm_name=_text(message["AlarmName"]),
                    state=_text(message["NewStateValue"]),
                    instance_id=instance_id(dimensions["InstanceId"]),
                    changed_at=_text(message.get("StateChangeTime", "")),
                    reason=_text(message.get("NewStateReason", "")),
                )
            )
        except RecursionError:
            # json.loads recurses once per nesting level: "[" * 100000 exhausts the stack.
            problems.append(f"record {number}: the message nests too deeply to be an alarm message")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            why = f"{type(error).__name__}: {_short(error)}"
            problems.append(f"record {number}: not a CloudWatch alarm message ({why})")
    return events, problems


def _from_relook(event: dict[str, Any]) -> tuple[list[Event], list[str]]:
    try:
        alarm = event["alarm"]
        return [
            AlarmEvent(
                alarm_name=_text(alarm["alarm_name"]),
                state=_text(alarm["state"]),
                instance_id=instance_id(alarm["instance_id"]),
                changed_at=_text(alarm["changed_at"]),
                reason=_text(alarm.get("reason", "")),
                look_at=_text(event["look_at"]) or "?",
                schedule=_text(event.get("schedule", "")),
            )
        ], []
    except EventError as error:
        return [], [f"look-again payload: {error}"]
    except (KeyError, TypeError, AttributeError) as error:
        return [], [f"malformed look-again payload: missing or wrong {type(error).__name__}: {_short(error)}"]


def _from_state_change(event: dict[str, Any]) -> tuple[list[Event], list[str]]:
    try:
        detail = event["detail"]
        if detail["state"] != "stopped":
            return [], []
        return [StoppedEvent(instance_id=instance_id(detail["instance-id"]), at=_text(event.get("time", "")))], []
    except EventError as error:
        return [], [f"EC2 state-change event: {error}"]
    except (KeyError, TypeError, AttributeError) as error:
        return [], [f"malformed EC2 state-change event: missing or wrong {type(error).__name__}: {_short(error)}"]


def _from_stack(event: dict[str, Any]) -> tuple[list[Event], list[str]]:
    """Pulumi's invocation: on delete every instance it named goes; on update, those the new input no longer names."""
    lifecycle = event.get(LIFECYCLE_KEY)
    if not isinstance(lifecycle, dict) or lifecycle.get("action") not in ("create", "update", "delete"):
        return [], [f"stack event without a lifecycle action ({LIFECYCLE_KEY}.action create, update or delete)"]
    previous = lifecycle.get("prev_input")
    now, before = _instance_ids(event), _instance_ids(previous if isinstance(previous, dict) else {})
    if now is None or before is None:
        return [], ["stack event: instance_ids is not a list of instance ids"]
    action = str(lifecycle["action"])
    gone = {"create": set(), "update": set(before) - set(now), "delete": set(before) | set(now)}[action]
    return [StackChange(action, tuple(sorted(gone)))], []


def _instance_ids(payload: dict[str, Any]) -> list[str] | None:
    ids = payload.get("instance_ids", [])
    if not isinstance(ids, list) or not all(is_instance_id(item) for item in ids):
        return None
    return ids
