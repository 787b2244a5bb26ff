"""What each per-instance alarm watches, when it fires, and the email a person reads (pure).

Every spec is checked against CloudWatch's documented limits (infra.aws_rules)
when it is made, and every description when it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from healthcheck import contract
from infra.aws_rules import RULES, alarm_timing_problems
from infra.detection import Detection
from infra.settings import Settings

ALARM_TYPE = "aws:cloudwatch/metricAlarm:MetricAlarm"
# Memory pressure (PSI "full" avg10, published every 10 s): above 10% for 3 of 3 datapoints emails a person.
PRESSURE_PERIOD_S = 10
PRESSURE_DATAPOINTS = 3
PRESSURE_FULL_PERCENT = 10.0


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm on one instance; `description` is a template of {instance_id}, {bucket} and {region}."""

    key: str
    metric_name: str
    namespace: str
    statistic: str
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison_operator: str
    treat_missing_data: str
    description: str
    extra_dimensions: dict[str, str] = field(default_factory=dict)
    recover: bool = False
    invokes_auto_reboot: bool = False

    def __post_init__(self) -> None:
        problems = alarm_timing_problems(self.period, self.evaluation_periods, self.datapoints_to_alarm)
        if problems:
            raise ValueError(f"{self.key}: " + "; ".join(problems))

    def describe(self, instance_id: str, bucket: str, region: str) -> str:
        text = self.description.format(instance_id=instance_id, bucket=bucket, region=region)
        problem = RULES[(ALARM_TYPE, "alarmDescription")].problem(text)
        if problem is not None:
            raise ValueError(f"{self.key}: alarm description {problem}")
        return text


# Every command an email prints names the region: a laptop set to another one would not find the instance.
PROBE = "trainguard probe {instance_id} --region {region}"
# What every alarm that invokes the auto-reboot function tells the person it emails.
RECOVERING = (
    "trainguard's auto-reboot function is snapshotting its volumes, saving the console to "
    f"s3://{{bucket}}/{contract.POSTMORTEM_PREFIX}{{instance_id}}/ and rebooting it (once; it never loops; a stopped "
    "or booting instance is left alone), and will email what it did. If that email does not come within 5 minutes, "
    f"run {PROBE} and reboot by hand: trainguard reboot {{instance_id}} --region {{region}}."
)


def instance_alarms(settings: Settings, can_recover: bool) -> tuple[AlarmSpec, ...]:
    """The alarms every instance gets, from the stack's thresholds."""
    return (
        ssh_unresponsive(settings.detection),
        agent_heartbeat(settings.detection),
        cpu(settings.cpu_alarm_percent),
        memory(settings.memory_alarm_percent),
        memory_pressure(),
        disk("root", "/", settings.disk_alarm_percent),
        disk("data", contract.DATA_MOUNT, settings.disk_alarm_percent),
        system_status(can_recover),
        instance_status(),
    )


def ssh_unresponsive(detection: Detection) -> AlarmSpec:
    """The incident: the canary hears no SSH banner for M of the last N slots."""
    return AlarmSpec(
        key=contract.SSH_ALARM_KEY,
        metric_name=contract.SSH_RESPONSIVE_METRIC,
        namespace=contract.CANARY_NAMESPACE,
        statistic="Minimum",
        period=detection.canary_interval_s,
        # M of N: slots the canary missed (a late or cold invocation) must not keep the alarm from firing.
        evaluation_periods=detection.canary_evaluation_periods,
        datapoints_to_alarm=detection.canary_datapoints,
        threshold=1,
        comparison_operator="LessThanThreshold",
        treat_missing_data="notBreaching",
        invokes_auto_reboot=True,
        description=(
            f"sshd on {{instance_id}} has sent no SSH banner for {detection.ssh_unresponsive_s}s to trainguard's "
            "canary: the port may still be open, but nothing above the kernel answers. This is the incident: "
            "memory exhaustion or a userspace freeze, which EC2's own checks can miss. " + RECOVERING
        ),
    )


def agent_heartbeat(detection: Detection) -> AlarmSpec:
    """The CloudWatch agent's memory metric stops arriving: silence is the signal."""
    minutes = detection.heartbeat_missing_minutes
    return AlarmSpec(
        key=contract.HEARTBEAT_ALARM_KEY,
        metric_name=contract.MEMORY_METRIC,
        namespace=contract.AGENT_NAMESPACE,
        statistic="SampleCount",
        period=60,
        evaluation_periods=minutes,
        datapoints_to_alarm=minutes,
        threshold=1,
        comparison_operator="LessThanThreshold",
        # Silence is the signal: a missing datapoint counts against the host.
        treat_missing_data="breaching",
        invokes_auto_reboot=True,
        description=(
            f"The CloudWatch agent on {{instance_id}} has sent nothing for {minutes} minutes: the host is frozen, "
            "or the agent died. " + RECOVERING
        ),
    )


def cpu(percent: int) -> AlarmSpec:
    return AlarmSpec(
        key="cpu",
        metric_name="CPUUtilization",
        namespace="AWS/EC2",
        statistic="Average",
        # Basic monitoring's 5-minute metrics: the same 15 minutes without detailed monitoring's bill.
        period=300,
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=percent,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        description=(
            f"CPU has been above {percent}% for 15 minutes on {{instance_id}}. "
            "Training often saturates the CPU on purpose, so trainguard only tells you: it did nothing. "
            f"If this is not your job (a runaway data loader, a stuck process), look now: {PROBE}, then top."
        ),
    )


def memory(percent: int) -> AlarmSpec:
    return AlarmSpec(
        key="memory",
        metric_name=contract.MEMORY_METRIC,
        namespace=contract.AGENT_NAMESPACE,
        statistic="Average",
        period=60,
        evaluation_periods=5,
        datapoints_to_alarm=5,
        threshold=percent,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        description=(
            f"Memory use has been above {percent}% for 5 minutes on {{instance_id}}. "
            "This is how the incident's freeze began: jobs filled memory, the kernel thrashed, sshd could not "
            "run, and nobody could log in for 55 minutes. trainguard sent this email; if the host freezes, the "
            f"status-check alarm takes over. Act while SSH still works: {PROBE}; stop or shrink a job (smaller "
            f"batch, fewer data-loader workers) and keep results in {contract.RESULTS_DIR}, copied every 5 minutes "
            "to s3://{bucket}/{instance_id}/."
        ),
    )


def memory_pressure() -> AlarmSpec:
    """PSI full avg10, published every 10 s: above 10% for 3 of 3 datapoints emails a person."""
    return AlarmSpec(
        key="memory-pressure",
        metric_name=contract.PRESSURE_FULL_METRIC,
        namespace=contract.AGENT_NAMESPACE,
        statistic="Maximum",
        period=PRESSURE_PERIOD_S,
        evaluation_periods=PRESSURE_DATAPOINTS,
        datapoints_to_alarm=PRESSURE_DATAPOINTS,
        threshold=PRESSURE_FULL_PERCENT,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="notBreaching",
        # The agent's StatsD input tags each metric with its type.
        extra_dimensions={"metric_type": "gauge"},
        description=(
            f"Memory pressure on {{instance_id}}: for {PRESSURE_DATAPOINTS * PRESSURE_PERIOD_S}s, every task "
            f"was stalled waiting for memory more than {PRESSURE_FULL_PERCENT:g}% of the time (PSI full "
            "avg10). This comes before a freeze: the kernel is reclaiming and thrashing. trainguard sent this "
            "email and did nothing yet; the training slice keeps sshd alive, and the kernel will kill a worker "
            f"inside it if memory runs out. Act now: {PROBE}; trainguard launch --status shows each worker's "
            "memory; stop one, or shrink its batch or data-loader workers."
        ),
    )


def disk(label: str, path: str, percent: int) -> AlarmSpec:
    return AlarmSpec(
        key=f"disk-{label}",
        metric_name=contract.DISK_METRIC,
        namespace=contract.AGENT_NAMESPACE,
        statistic="Maximum",
        period=300,
        evaluation_periods=1,
        datapoints_to_alarm=1,
        threshold=percent,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        extra_dimensions={"path": path},
        description=(
            f"Disk {path} is more than {percent}% full on {{instance_id}}. A full disk "
            "makes checkpoints and logs fail to write, and jobs crash or corrupt their output. trainguard "
            "sent this email. Delete old checkpoints, move data to S3, or grow the volume "
            f"(aws ec2 modify-volume). Results in {contract.RESULTS_DIR} are already in "
            "s3://{bucket}/{instance_id}/."
        ),
    )


def system_status(can_recover: bool) -> AlarmSpec:
    """AWS's hardware under the instance: EC2 recovers it where the type allows, else a person is told."""
    action = (
        "trainguard asked EC2 to recover the instance onto healthy hardware, keeping its id, addresses "
        f"and EBS volumes. Wait for the OK email, then run {PROBE}. If it is not back within 15 "
        "minutes, stop and start it."
        if can_recover
        else "This instance type has instance-store disks, so EC2 cannot recover it automatically; "
        "trainguard sent this email. Stop and start it (aws ec2 stop-instances, then start-instances) "
        f"to move it to healthy hardware: instance-store data is lost, the {contract.DATA_MOUNT} volume is kept."
    )
    return AlarmSpec(
        key="system-status",
        metric_name="StatusCheckFailed_System",
        namespace="AWS/EC2",
        statistic="Maximum",
        period=60,
        evaluation_periods=2,
        datapoints_to_alarm=2,
        threshold=0,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        recover=can_recover,
        description=(
            "The EC2 system status check has failed for 2 minutes on {instance_id}: the AWS hardware or "
            "network under it is failing, and nothing inside the instance can fix that. " + action
        ),
    )


def instance_status() -> AlarmSpec:
    return AlarmSpec(
        key="instance-status",
        metric_name="StatusCheckFailed_Instance",
        namespace="AWS/EC2",
        statistic="Maximum",
        period=60,
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=0,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        invokes_auto_reboot=True,
        description=(
            "The EC2 instance status check has failed for 3 minutes on {instance_id}: its operating system "
            "stopped answering (kernel panic, memory exhausted, or frozen). " + RECOVERING
        ),
    )
