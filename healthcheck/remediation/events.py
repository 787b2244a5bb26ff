"""Events the auto-reboot function accepts, turned into one shape (pure).

- the CloudWatch alarm Lambda action: alarmData.state.value and
  alarmData.configuration.metrics[].metricStat.metric.dimensions.InstanceId;
- the classic alarm message wrapped by SNS: Records[].Sns.Message (JSON) with
  NewStateValue and Trigger.Dimensions;
- EventBridge's "EC2 Instance State-change Notification", which tells the
  function that an instance it stopped can be started again.

Anything else is reported as a problem, never raised: CloudWatch and Lambda
retry a function that raises, and a junk event would be retried for nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm state change for one instance."""

    alarm_name: str
    state: str
    instance_id: str
    changed_at: str
    reason: str


@dataclass(frozen=True)
class StoppedEvent:
    """EC2 reports an instance stopped."""

    instance_id: str
    at: str


Event = AlarmEvent | StoppedEvent


def parse(event: Any) -> tuple[list[Event], list[str]]:
    """The events in a Lambda payload, and what could not be understood."""
    if not isinstance(event, dict):
        return [], [f"payload is {type(event).__name__}, not an object"]
    if "alarmData" in event:
        return _from_lambda_action(event)
    if "Records" in event:
        return _from_sns_records(event["Records"])
    if event.get("detail-type") == "EC2 Instance State-change Notification":
        return _from_state_change(event)
    return [], [f"unknown event with keys {sorted(event)[:8]}"]


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
            return [], [f"alarm {data.get('alarmName')!r} names {len(instance_ids)} instances, expected one"]
        return [
            AlarmEvent(
                alarm_name=str(data["alarmName"]),
                state=str(state["value"]),
                instance_id=instance_ids.pop(),
                changed_at=str(state.get("timestamp") or event.get("time", "")),
                reason=str(state.get("reason", "")),
            )
        ], []
    except (KeyError, TypeError, AttributeError) as error:
        return [], [f"malformed alarm action payload: missing {error}"]


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
                    alarm_name=str(message["AlarmName"]),
                    state=str(message["NewStateValue"]),
                    instance_id=str(dimensions["InstanceId"]),
                    changed_at=str(message.get("StateChangeTime", "")),
                    reason=str(message.get("NewStateReason", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"record {number}: not a CloudWatch alarm message ({type(error).__name__}: {error})")
    return events, problems


def _from_state_change(event: dict[str, Any]) -> tuple[list[Event], list[str]]:
    try:
        detail = event["detail"]
        if detail["state"] != "stopped":
            return [], []
        return [StoppedEvent(instance_id=str(detail["instance-id"]), at=str(event.get("time", "")))], []
    except (KeyError, TypeError) as error:
        return [], [f"malformed EC2 state-change event: missing {error}"]
