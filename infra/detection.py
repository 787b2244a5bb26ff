"""How long, at worst, from the moment a host freezes until trainguard acts, per detection path (pure).

    userspace_freeze (SSH canary, the incident). The canary samples every
    instance on fixed wall-clock slots, one every `interval` seconds, and the
    alarm fires when M of the last N slots failed (M = sshUnresponsiveSeconds /
    interval; N = M + slack). Missing slots count as not failing, and the
    slack is there for them: EventBridge starts each one-minute invocation at
    an uneven second, up to EVENTBRIDGE_JITTER_S late, and a cold start costs
    up to COLD_START_S more, so the slots between one invocation's last sample
    and the next one's first may go unsampled; slack = ceil((jitter + cold
    start) / interval) slots, at least one. Worst case, from the freeze:
        the first failing slot comes up to one interval later     interval
        M failing slots span M - 1 more intervals                  (M - 1) x interval
        up to `slack` slots in between are missed                 slack x interval
        the last failing sample is decided at the probe timeout   interval / 2
        CloudWatch's evaluation delay for a high-resolution alarm HIGH_RES_EVALUATION_DELAY_S
        the alarm-to-Lambda-to-RebootInstances latency            ACTION_LATENCY_S
    defaults (10 s, 60 s: M = 6, slack = 2, N = 8): 10 + 50 + 20 + 5 + 20 + 5 = 110 s

    agent_silent (heartbeat: the CloudWatch agent stops sending mem_used_percent):
        one collection interval (the last datapoint just before the freeze),
        then `heartbeatMissingMinutes` missing periods, the standard
        evaluation delay and the action latency.
            60 + minutes x 60 + standard_delay + action_latency
        defaults: 60 + 180 + 60 + 5 = 305 s

    instance_status (EC2 instance status check, 3 x 1 min):
            check_cadence + 3 x 60 + standard_delay + action_latency = 60 + 180 + 60 + 5 = 305 s

    system_status (EC2 system status check, 2 x 1 min; the action is EC2 recover, or an email):
            check_cadence + 2 x 60 + standard_delay + action_latency = 60 + 120 + 60 + 5 = 245 s

The delays are not promises AWS makes; they are the figures this project plans
with (CloudWatch evaluates high-resolution alarms every 10 s and standard ones
every minute, and metrics may land that late).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from healthcheck.lambdas.ssh_canary import INTERVALS_S

HIGH_RES_EVALUATION_DELAY_S = 20
STANDARD_EVALUATION_DELAY_S = 60
ACTION_LATENCY_S = 5
AGENT_COLLECTION_INTERVAL_S = 60
STATUS_CHECK_CADENCE_S = 60
STATUS_PERIOD_S = 60
INSTANCE_STATUS_PERIODS = 3
SYSTEM_STATUS_PERIODS = 2
# How late EventBridge may start a rate(1 minute) invocation, and what a cold start of the canary costs
# (Python, boto3, in a VPC): planning figures, not AWS promises.
EVENTBRIDGE_JITTER_S = 10
COLD_START_S = 10
# The canary decides each sample within half its interval, so samples never overlap.
CANARY_PROBE_SHARE = 0.5
# The intervals the canary itself accepts: one list, so the stack never sets one the function refuses.
CANARY_INTERVALS_S = INTERVALS_S
MAX_USERSPACE_FREEZE_S = 600
MIN_HEARTBEAT_MINUTES = 3


@dataclass(frozen=True)
class Detection:
    """The settings the budget depends on."""

    canary_interval_s: int = 10
    ssh_unresponsive_s: int = 60
    heartbeat_missing_minutes: int = 3

    @property
    def canary_datapoints(self) -> int:
        """M: failing slots that fire the alarm."""
        return self.ssh_unresponsive_s // self.canary_interval_s

    @property
    def canary_slack(self) -> int:
        """Slots the alarm window holds beyond M, for slots missed between invocations."""
        return max(1, math.ceil((EVENTBRIDGE_JITTER_S + COLD_START_S) / self.canary_interval_s))

    @property
    def canary_evaluation_periods(self) -> int:
        """N: the alarm's window, in slots."""
        return self.canary_datapoints + self.canary_slack

    @property
    def canary_probe_timeout_s(self) -> float:
        return self.canary_interval_s * CANARY_PROBE_SHARE

    @property
    def samples_per_minute(self) -> int:
        """Slots one invocation of the once-a-minute canary samples."""
        return max(1, 60 // self.canary_interval_s)


def detection_budget(detection: Detection) -> dict[str, int]:
    """Worst-case seconds from a freeze to the recovery call, per path (arithmetic in the module docstring)."""
    interval = detection.canary_interval_s
    return {
        "userspace_freeze": round(
            interval
            + (detection.canary_datapoints - 1) * interval
            + detection.canary_slack * interval
            + detection.canary_probe_timeout_s
            + HIGH_RES_EVALUATION_DELAY_S
            + ACTION_LATENCY_S
        ),
        "agent_silent": AGENT_COLLECTION_INTERVAL_S
        + detection.heartbeat_missing_minutes * 60
        + STANDARD_EVALUATION_DELAY_S
        + ACTION_LATENCY_S,
        "instance_status": STATUS_CHECK_CADENCE_S
        + INSTANCE_STATUS_PERIODS * STATUS_PERIOD_S
        + STANDARD_EVALUATION_DELAY_S
        + ACTION_LATENCY_S,
        "system_status": STATUS_CHECK_CADENCE_S
        + SYSTEM_STATUS_PERIODS * STATUS_PERIOD_S
        + STANDARD_EVALUATION_DELAY_S
        + ACTION_LATENCY_S,
    }


def detection_problems(detection: Detection) -> list[tuple[str, object, str, str]]:
    """(key, value, problem, fix) for detection settings the stack refuses."""
    problems: list[tuple[str, object, str, str]] = []
    interval = detection.canary_interval_s
    if interval not in CANARY_INTERVALS_S:
        problems.append(("canaryIntervalSeconds", interval, "not a canary interval", "use 10, 20, 30 or 60"))
        return problems
    unresponsive = detection.ssh_unresponsive_s
    if unresponsive % interval or not 2 <= unresponsive // interval <= 60:
        problems.append(
            (
                "sshUnresponsiveSeconds",
                unresponsive,
                f"must be 2 to 60 canary intervals of {interval}s",
                f"use a multiple of {interval} from {2 * interval} to {60 * interval}",
            )
        )
        return problems
    freeze = detection_budget(detection)["userspace_freeze"]
    if freeze > MAX_USERSPACE_FREEZE_S:
        problems.append(
            (
                "sshUnresponsiveSeconds",
                unresponsive,
                f"a frozen host would be rebooted only after {freeze}s, past the {MAX_USERSPACE_FREEZE_S}s limit",
                "lower sshUnresponsiveSeconds or canaryIntervalSeconds",
            )
        )
    return problems
