"""`trainguard status --test-alarm`: a real alert email through the real path, and nothing else.

A short-lived CloudWatch alarm, trainguard-<stack>-test-alarm, on a metric nothing publishes, whose only
actions are the stack's alert topic: set to ALARM, then OK, then deleted (even on Ctrl-C). Both changes
reach every confirmed subscriber as the real alarms' emails do, with TEST in the alarm's description and
reason. It has no instance dimension and no action but the topic, so the auto-reboot function never hears
of it: nothing is rebooted or snapshotted and no budget is spent.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healthcheck import contract

# Where the test alarm's metric would be: nothing publishes it.
TRIAL_NAMESPACE = "Trainguard/Test"
TRIAL_METRIC = "TestAlarm"
# Between the ALARM and the OK: the two emails go out in that order.
HOLD_S = 5.0


@dataclass(frozen=True)
class Trial:
    alarm_name: str
    topic_arn: str
    states: tuple[str, ...]  # the states it was set to, in order


def trial_alarm_name(stack: str) -> str:
    return contract.stack_alarm_name(stack, contract.TEST_ALARM_KEY)


def send_trial_alert(
    cloudwatch: Any,
    stack: str,
    topic_arn: str,
    *,
    hold_s: float = HOLD_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Trial:
    """Create the test alarm, set it to ALARM, wait `hold_s`, set it to OK, and delete it whatever happens."""
    name = trial_alarm_name(stack)
    who = getpass.getuser()
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        AlarmDescription=(
            f"TEST of trainguard's alert email for stack {stack}, sent by {who} with `trainguard status "
            "--test-alarm`. Nothing is wrong: no instance is rebooted or snapshotted. The real alarms' emails "
            "look like this one."
        ),
        Namespace=TRIAL_NAMESPACE,
        MetricName=TRIAL_METRIC,
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="ignore",  # CloudWatch's own evaluation leaves the state as the test set it
        ActionsEnabled=True,
        AlarmActions=[topic_arn],
        OKActions=[topic_arn],
    )
    states = []
    try:
        for state, hold in (("ALARM", hold_s), ("OK", 0.0)):
            cloudwatch.set_alarm_state(
                AlarmName=name,
                StateValue=state,
                StateReason=f"TEST by {who} (trainguard status --test-alarm): set to {state} by hand",
            )
            states.append(state)
            sleep(hold)
    finally:
        cloudwatch.delete_alarms(AlarmNames=[name])
    return Trial(name, topic_arn, tuple(states))
