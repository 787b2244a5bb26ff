"""How long, at worst, from the moment a host freezes until trainguard acts, per detection path (pure).

    userspace_freeze (SSH canary, the incident): the last good sample may come
        just before the freeze, so the first failing one starts up to one
        interval later; the alarm needs `datapoints` failing samples, which
        span (datapoints - 1) more intervals; the last of them is known only
        after the probe's timeout; then CloudWatch's evaluation delay for a
        high-resolution alarm, and the alarm-to-Lambda-to-RebootInstances
        latency.
            interval + (datapoints - 1) x interval + probe_timeout + high_res_delay + action_latency
        defaults: 10 + 5 x 10 + 5 + 20 + 5 = 90 s

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

from dataclasses import dataclass

HIGH_RES_EVALUATION_DELAY_S = 20
STANDARD_EVALUATION_DELAY_S = 60
ACTION_LATENCY_S = 5
AGENT_COLLECTION_INTERVAL_S = 60
STATUS_CHECK_CADENCE_S = 60
STATUS_PERIOD_S = 60
INSTANCE_STATUS_PERIODS = 3
SYSTEM_STATUS_PERIODS = 2
# The canary decides each sample within half its interval, so samples never overlap.
CANARY_PROBE_SHARE = 0.5
CANARY_INTERVALS_S = (10, 20, 30, 60)
MAX_USERSPACE_FREEZE_S = 600


@dataclass(frozen=True)
class Detection:
    """The settings the budget depends on."""

    canary_interval_s: int = 10
    ssh_unresponsive_s: int = 60
    heartbeat_missing_minutes: int = 3

    @property
    def canary_datapoints(self) -> int:
        return self.ssh_unresponsive_s // self.canary_interval_s

    @property
    def canary_probe_timeout_s(self) -> float:
        return self.canary_interval_s * CANARY_PROBE_SHARE


def detection_budget(detection: Detection) -> dict[str, int]:
    """Worst-case seconds from a freeze to the recovery call, per path (arithmetic in the module docstring)."""
    interval = detection.canary_interval_s
    return {
        "userspace_freeze": round(
            interval
            + (detection.canary_datapoints - 1) * interval
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
