"""Scenario 3 (recovery): the unguarded freeze again, with the remediation running for real on the host.

- The SSH canary's own `banner_sample` probes the VM once per slot (10 s)
  and publishes each sample to moto's CloudWatch with the canary's own
  `metric_data`.
- The stack's alarm rule (the ssh-unresponsive spec of
  infra.alarm_specs.instance_alarms: M of N slots below the threshold) is
  applied here to those samples, to find when CloudWatch would fire. It is
  the rule computed here, not CloudWatch (moto evaluates no alarms), and
  without CloudWatch's evaluation delay.
- The auto-reboot handler then runs against a moto instance that stands for
  the VM (managed tag, launched long before the boot grace period). Its EC2
  client's RebootInstances resets the VM through the qemu monitor, and its
  GetConsoleOutput answers with the VM's serial log.
- The VM boots, sshd answers, the probe logs in and says HEALTHY, and the
  results written to /data before the pressure are checked byte for byte:
  in the guest, then on the host after the guest's `trainguard-push --now`
  (a training script's call) and `trainguard pull` from moto's S3.

The guest is the incident's host plus the stack's `trainguard-push`, its
settings and the drill's `aws` for moto, and no more: the stack's prevention
(slice, earlyoom) would stop the very freeze this scenario recovers from.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from drill import timeline
from drill.guest import SETUP_COMMANDS, USER, WORKER_PATH, GuestShell, Keys, guest_files
from drill.image import Image
from drill.local_aws import BUCKET, LocalAws, guest_aws_files
from drill.observe import Sampler, probe_answer
from drill.qemu import Accelerator, Vm
from drill.scenarios import (
    GuestPlan,
    Outcome,
    ScenarioFailed,
    Watcher,
    booted_shell,
    guest_vm,
    kept_on_failure,
    start_run,
)
from drill.seed import GuestFile
from healthcheck import contract
from healthcheck.lambdas import auto_reboot, ssh_canary
from healthcheck.remediation.actions import Clients, Remediator
from healthcheck.remediation.policy import RemediationSettings
from infra.alarm_specs import ssh_unresponsive
from infra.bundle import bundle_files
from infra.detection import Detection, detection_budget

RESULTS = f"{contract.RESULTS_DIR}/checkpoint-epoch-3.txt"
# The guest's push (AWS CLI calls take tens of seconds under emulation) and the host's pull, each at most.
PUSH_TIMEOUT_S = PULL_TIMEOUT_S = 180.0
# EC2 keeps the last 64 KB of an instance's console output (GetConsoleOutput, Latest=true).
CONSOLE_BYTES = 64 * 1024
INSTANCE_TYPE = "g5.xlarge"


def restarting_workers_command(count: int, step_mib: int = 4, limit_mib: int = 350) -> str:
    """Start `count` workers outside any slice, each restarted 2 s after it dies, as a job with retries is.

    Without the restarts two kernel OOM kills could leave room for the rest (seen here once the host was
    idle), and the freeze this scenario recovers from would end on its own before the alarm.
    """
    worker = f"python3 {WORKER_PATH} '$i' {step_mib} {limit_mib}"
    return (
        f"for i in $(seq 0 {count - 1}); do "
        f"nohup sh -c 'while true; do {worker}; sleep 2; done' >/dev/null 2>&1 </dev/null & echo $!; done"
    )


@dataclass(frozen=True)
class AlarmRule:
    """The part of an alarm spec that decides when it fires: M of N periods below the threshold."""

    name: str
    period_s: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float


def ssh_alarm_rule() -> AlarmRule:
    """The stack's ssh-unresponsive alarm with its default detection settings."""
    spec = ssh_unresponsive(Detection())
    if spec.comparison_operator != "LessThanThreshold" or spec.statistic != "Minimum":
        raise ValueError(
            f"the drill computes only Minimum < threshold, not {spec.statistic} {spec.comparison_operator}"
        )
    return AlarmRule(spec.key, spec.period, spec.evaluation_periods, spec.datapoints_to_alarm, spec.threshold)


def detection_budget_s() -> int:
    return detection_budget(Detection())["userspace_freeze"]


def first_counted_failure(points: Sequence[tuple[float, float]], rule: AlarmRule, fired_at: float) -> float:
    """The earliest breaching point among the N periods the alarm evaluated when it fired: where detection
    starts counting (sshd can answer once between silences, so "after the last banner" can come after it)."""
    last_slot = math.floor(fired_at / rule.period_s)
    window = range(last_slot - rule.evaluation_periods + 1, last_slot + 1)
    failing = [at for at, value in points if math.floor(at / rule.period_s) in window and value < rule.threshold]
    return min(failing, default=fired_at)


def alarm_fires_at(points: Sequence[tuple[float, float]], rule: AlarmRule) -> float | None:
    """When the rule first holds: the time of the datapoint that makes M of the last N periods breach.

    Points are (seconds, value); each period's value is its Minimum; a period
    with no point is not breaching (the spec's treat_missing_data).
    """
    periods: dict[int, float] = {}
    last_at: dict[int, float] = {}
    for at, value in sorted(points):
        slot = math.floor(at / rule.period_s)
        periods[slot] = min(value, periods.get(slot, value))
        last_at[slot] = at
        window = range(slot - rule.evaluation_periods + 1, slot + 1)
        breaching = sum(1 for s in window if s in periods and periods[s] < rule.threshold)
        if breaching >= rule.datapoints_to_alarm:
            return at
    return None


@dataclass(frozen=True)
class CanarySample:
    at_s: float
    responsive: bool
    seconds: float
    detail: str


class CanaryLoop:
    """The canary Lambda's sampling, on its fixed slots, publishing each sample to (moto's) CloudWatch."""

    def __init__(
        self, instance_id: str, port: int, cloudwatch: Any, elapsed: Callable[[], float], interval: float = 10.0
    ) -> None:
        self.samples: list[CanarySample] = []
        self._target = ssh_canary.Target(instance_id, "127.0.0.1", port)
        self._cloudwatch = cloudwatch
        self._elapsed = elapsed
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-canary", daemon=True)

    def __enter__(self) -> CanaryLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval * 2)

    def _loop(self) -> None:
        timeout = self._interval * ssh_canary.PROBE_SHARE_OF_INTERVAL
        while not self._stop.wait(max(0.0, ssh_canary.first_slot(self._elapsed(), self._interval) - self._elapsed())):
            at = self._elapsed()
            sample = ssh_canary.banner_sample(self._target, timeout)
            data = ssh_canary.metric_data([sample], datetime.now(timezone.utc))
            self._cloudwatch.put_metric_data(Namespace=contract.CANARY_NAMESPACE, MetricData=data)
            self.samples.append(CanarySample(round(at, 2), sample.responsive, round(sample.seconds, 3), sample.detail))
            self._stop.wait(1.0)  # past this slot's grace, so the next wait is for the next slot


@dataclass(frozen=True, kw_only=True)
class RecoveryPlan(GuestPlan):
    watch_s: float = 600.0  # from the workers' start to the alarm, at most
    recover_s: float = 600.0  # from the reboot call to a HEALTHY probe, at most


def alarm_event(rule: AlarmRule, instance_id: str, at: datetime) -> dict[str, Any]:
    """What CloudWatch's Lambda alarm action would deliver for this alarm's ALARM state."""
    return {
        "source": "aws.cloudwatch",
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "alarmData": {
            "alarmName": contract.instance_alarm_name("drill", instance_id, rule.name),
            "state": {
                "value": "ALARM",
                "reason": f"{rule.datapoints_to_alarm} of {rule.evaluation_periods} datapoints < {rule.threshold:g}"
                " (computed by the drill)",
                "timestamp": at.isoformat(),
            },
            "configuration": {
                "metrics": [
                    {
                        "metricStat": {
                            "metric": {
                                "namespace": contract.CANARY_NAMESPACE,
                                "name": contract.SSH_RESPONSIVE_METRIC,
                                "dimensions": {contract.INSTANCE_DIMENSION: instance_id},
                            }
                        }
                    }
                ]
            },
        },
    }


def wire_ec2_to_vm(ec2: Any, vm: Vm, on_reboot: Callable[[float], None]) -> None:
    """moto's EC2 client, with RebootInstances resetting the VM and GetConsoleOutput reading its serial log."""

    def reboot(**_: Any) -> None:
        vm.monitor("system_reset")
        on_reboot(vm.elapsed())  # then the call goes on to moto, which records the reboot

    def console(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        text = vm.console_text()[-CONSOLE_BYTES:]
        instance_id = params.get("body", {}).get("InstanceId", "")
        return SimpleNamespace(status_code=200), {"InstanceId": instance_id, "Output": text}

    ec2.meta.events.register("before-call.ec2.RebootInstances", reboot)
    ec2.meta.events.register("before-call.ec2.GetConsoleOutput", console)


def push_files(instance_id: str, bucket: str, region: str) -> dict[str, GuestFile]:
    """The stack's `trainguard-push` and bundle.env as the bundle installs them, the instance's settings, and the
    drill's `aws` for moto."""
    wanted = (f"/{contract.PUSH_COMMAND}", contract.BUNDLE_ENV_FILE)
    installed = {
        item.path: GuestFile(item.content, f"{item.mode:04o}") for item in bundle_files() if item.path.endswith(wanted)
    }
    settings = {
        contract.BUCKET_VARIABLE: bucket,
        "AWS_DEFAULT_REGION": region,
        contract.INSTANCE_ID_VARIABLE: instance_id,
    }
    text = "".join(f"{name}={value}\n" for name, value in settings.items())
    return {**installed, contract.ENV_FILE: GuestFile(text.encode(), "0644"), **guest_aws_files()}


def managed_instance(aws: LocalAws, grace: timedelta) -> str:
    """A moto instance standing for the VM: trainguard's managed tag, launched before the boot grace period."""
    from moto.ec2.models import ec2_backends

    key, value = RemediationSettings().managed_tag
    ec2 = aws.client("ec2")
    image = "ami-0123456789abcdef0"  # moto runs an instance from any well-formed AMI id
    reservation = ec2.run_instances(
        ImageId=image,
        InstanceType=INSTANCE_TYPE,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": key, "Value": value}]}],
    )
    instance_id: str = reservation["Instances"][0]["InstanceId"]
    # moto sets the launch time to now; a training instance has run for longer than the grace period.
    account = aws.client("sts").get_caller_identity()["Account"]
    backend = ec2_backends[account][aws.region]
    backend.get_instance(instance_id).launch_time = datetime.now(timezone.utc) - grace - timedelta(hours=1)
    return instance_id


@dataclass
class _Record:
    """What scenario 3 saw, for its outcome."""

    instance_id: str = ""
    pressure_at: float = 0.0
    workers: int = 0
    fired_at: float = 0.0
    failing_since: float = 0.0
    reboot_at: float = 0.0
    recovered_at: float = 0.0
    verdict: str = ""
    intact: bool = False
    pulled: bool = False
    samples: list[timeline.Sample] = field(default_factory=list)
    console: str = ""
    emails: list[tuple[str, str]] = field(default_factory=list)
    postmortem: list[str] = field(default_factory=list)


def run_recovery(
    image: Image, accelerator: Accelerator, plan: RecoveryPlan = RecoveryPlan(), log: TextIO = sys.stderr
) -> Outcome:
    """Scenario 3: freeze, detection by the stack's rule, the auto-reboot handler, recovery; figures vs budget."""
    rule, budget = ssh_alarm_rule(), detection_budget_s()
    run_dir, events, note = start_run("recovery", log)

    record = _Record()
    with kept_on_failure(run_dir), LocalAws() as aws:
        _drive(aws, image, accelerator, plan, run_dir, rule, note, record, log)
        record.emails = aws.emails()
        listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="postmortem/").get("Contents", [])
        record.postmortem = [item["Key"] for item in listed]
    return _recovery_outcome(record, budget, events, accelerator)


def _drive(
    aws: LocalAws,
    image: Image,
    accelerator: Accelerator,
    plan: RecoveryPlan,
    run_dir: Path,
    rule: AlarmRule,
    note: Callable[[float, str], None],
    record: _Record,
    log: TextIO,
) -> None:
    settings = RemediationSettings(topic_arn=aws.topic_arn, bucket=BUCKET)
    record.instance_id = managed_instance(aws, settings.boot_grace)
    keys, spec = guest_vm(
        run_dir,
        image,
        plan=plan,
        files={**guest_files(), **push_files(record.instance_id, BUCKET, aws.region)},
        commands=[*SETUP_COMMANDS, f"install -d -o {USER} {contract.RESULTS_DIR}"],
        # The probe's wait and the sshd wait both count from the reboot; then the push and the pull.
        time_limit_s=plan.boot_s + plan.watch_s + plan.recover_s + PUSH_TIMEOUT_S + PULL_TIMEOUT_S + 120,
        guest_forwards=(aws.forward(),),
    )
    with Vm(spec, run_dir / "vm", accelerator, log=log) as vm:
        note(0.0, f"qemu started ({accelerator.description}); moto instance {record.instance_id} stands for it")
        with Sampler(vm.ssh_port, vm.alive_port, vm.elapsed, on_sample=Watcher(note).sample) as sampler:
            shell = booted_shell(keys, vm, plan, note)
            written = shell.run(f"seq 1 200000 >{RESULTS} && sync && sha256sum {RESULTS}")
            digest = written.stdout.split()[0] if written.returncode == 0 else ""
            note(vm.elapsed(), f"results written to /data before the pressure: {RESULTS} sha256 {digest[:12]}")
            started = shell.run(restarting_workers_command(plan.workers))
            record.pressure_at = vm.elapsed()
            record.workers = len([word for word in started.stdout.split() if word.isdigit()])
            if started.returncode != 0 or not record.workers:
                raise ScenarioFailed(f"could not start the workers: {started.stderr.strip()}")
            note(
                record.pressure_at,
                f"{record.workers} workers started together over SSH, outside any slice, each restarted when killed",
            )
            _remediate(aws, vm, sampler, settings, rule, plan, note, record)
            record.verdict, said = _probe(keys, vm.ssh_port, vm, plan, record.reboot_at)
            note(vm.elapsed(), f"`trainguard probe` (logging in, host key checked): {record.verdict}: {said}")
            check = shell.run(f"sha256sum {RESULTS}", timeout=60)
            record.intact = bool(digest) and check.returncode == 0 and check.stdout.split()[:1] == [digest]
            note(vm.elapsed(), f"results on /data after the reboot: {'intact' if record.intact else 'NOT intact'}")
            record.pulled = _push_and_pull(shell, aws, record.instance_id, run_dir / "pulled", digest, vm.elapsed, note)
            record.samples = list(sampler.samples)
        record.console = vm.console_text()


def _push_and_pull(
    shell: GuestShell,
    aws: LocalAws,
    instance_id: str,
    dest: Path,
    digest: str,
    elapsed: Callable[[], float],
    note: Callable[[float, str], None],
) -> bool:
    """The guest pushes /data/results as a training script would; the host pulls it as the user would.
    True when the pulled copy of RESULTS has the digest it had before the freeze."""
    pushed = shell.run("trainguard-push --now", timeout=PUSH_TIMEOUT_S)
    if pushed.returncode != 0:
        note(elapsed(), f"trainguard-push FAILED (status {pushed.returncode}): {pushed.stderr.strip()[-300:]}")
        return False
    note(elapsed(), f"`trainguard-push --now` in the guest: {contract.RESULTS_DIR} is in moto's S3 at {instance_id}/")
    command = [sys.executable, "-m", "healthcheck", "pull", "--bucket", BUCKET, "--instance", instance_id, str(dest)]
    try:
        pulled = subprocess.run(
            command, env=aws.environment(), capture_output=True, text=True, timeout=PULL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        note(elapsed(), f"`trainguard pull` did not finish within {PULL_TIMEOUT_S:.0f}s")
        return False
    copy = dest / instance_id / Path(RESULTS).relative_to(contract.RESULTS_DIR)
    same = pulled.returncode == 0 and copy.is_file() and hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    said = (pulled.stdout.strip().splitlines() or [pulled.stderr.strip()])[-1]
    note(
        elapsed(),
        f"`trainguard pull` on the host ({said}): {copy.name} "
        + ("has the sha256 it had before the freeze" if same else "is MISSING or DIFFERENT"),
    )
    return same


def _remediate(
    aws: LocalAws,
    vm: Vm,
    sampler: Sampler,
    settings: Any,
    rule: AlarmRule,
    plan: RecoveryPlan,
    note: Callable[[float, str], None],
    record: _Record,
) -> None:
    """The canary samples, the rule fires, the handler reboots through moto into the VM, sshd answers again."""
    reboots: list[float] = []
    ec2 = aws.client("ec2")
    wire_ec2_to_vm(ec2, vm, reboots.append)
    services = ("s3", "sns", "ssm", "scheduler", "cloudwatch")
    clients = Clients(aws.region, ec2=ec2, **{name: aws.client(name) for name in services})
    with CanaryLoop(record.instance_id, vm.ssh_port, aws.client("cloudwatch"), vm.elapsed) as canary:
        record.fired_at = _wait_for_alarm(vm, canary, rule, record.pressure_at, plan, note)
        points = [(sample.at_s, 1.0 if sample.responsive else 0.0) for sample in canary.samples]
        record.failing_since = first_counted_failure(points, rule, record.fired_at)
        note(
            record.fired_at,
            f"the stack's rule ({rule.datapoints_to_alarm} of {rule.evaluation_periods} slots of {rule.period_s}s"
            " without a banner) holds: CloudWatch would fire now (computed here, not by CloudWatch)",
        )
        event = alarm_event(rule, record.instance_id, datetime.now(timezone.utc))
        answer = auto_reboot.handler(event, None, Remediator(settings, clients))
        note(vm.elapsed(), f"auto-reboot handler: {json.dumps(answer['handled'])[:300]}")
        if not reboots:
            raise ScenarioFailed(f"the handler did not reboot: {answer}")
        record.reboot_at = reboots[0]
        note(record.reboot_at, "RebootInstances reached moto, and reset the VM through the qemu monitor")
    record.recovered_at = _wait_for_banner(vm, sampler, record.reboot_at, plan)
    note(record.recovered_at, "sshd answers again")


def _recovery_outcome(
    record: _Record, budget: int, events: list[tuple[float, str]], accelerator: Accelerator
) -> Outcome:
    end = record.recovered_at
    for subject, _ in record.emails:
        events.append((end, f"moto's SNS received the handler's email: {subject}"))
    events.append((end, f"post-mortem kept in moto's S3: {', '.join(record.postmortem) or 'none'}"))
    before_reset = [s for s in record.samples if record.pressure_at <= s.at_s < record.reboot_at]
    frozen_from = record.failing_since
    detect, reboot_call = record.fired_at - frozen_from, record.reboot_at - frozen_from
    recover = record.recovered_at - record.reboot_at
    word = "within" if reboot_call <= budget else "OVER"
    events.append(
        (
            record.reboot_at,
            f"from the first failing sample the alarm counted ({frozen_from:.0f}s): detect {detect:.0f}s,"
            f" reboot call {reboot_call:.0f}s,"
            f" {word} detection_budget_seconds.userspace_freeze = {budget}s (the budget includes CloudWatch's"
            " evaluation delay, which the rule computed here has not)",
        )
    )
    kills = timeline.parse_kills(record.console)
    for kill in kills:
        kind = "the slice's limit" if kill.in_cgroup else "the kernel's OOM killer"
        at = kill.at_s if kill.at_s is not None else record.pressure_at
        events.append((at, f"{kind} killed {kill.name} ({kill.pid})"))
    summary = timeline.summary(
        "recovery",
        freeze=timeline.freeze_seconds(before_reset),
        workers_started=record.workers,
        workers_finished=0,  # the incident's workers run until something kills them
        workers_killed=sum(1 for kill in kills if kill.worker),
        detect=round(detect, 1),
        reboot_call=round(reboot_call, 1),
        recover=round(recover, 1),
        results_intact=record.intact and record.pulled and record.verdict in ("HEALTHY", "DEGRADED"),
    )
    return Outcome(summary, sorted(events), record.samples, [], kills, record.console, accelerator.description)


def _wait_for_alarm(
    vm: Vm,
    canary: CanaryLoop,
    rule: AlarmRule,
    pressure_at: float,
    plan: RecoveryPlan,
    note: Callable[[float, str], None],
) -> float:
    reported = 0
    while vm.running and vm.elapsed() - pressure_at < plan.watch_s:
        time.sleep(1.0)
        samples = list(canary.samples)
        for sample in samples[reported:]:
            word = "banner" if sample.responsive else "NO banner"
            note(
                sample.at_s,
                f"canary: {word} ({sample.seconds:.1f}s: {sample.detail[:60]}); published to moto's CloudWatch",
            )
        reported = len(samples)
        fired = alarm_fires_at([(s.at_s, 1.0 if s.responsive else 0.0) for s in samples if s.at_s >= pressure_at], rule)
        if fired is not None:
            return fired
    raise ScenarioFailed(f"the alarm rule did not hold within {plan.watch_s:.0f}s of the pressure")


def _wait_for_banner(vm: Vm, sampler: Sampler, since: float, plan: RecoveryPlan) -> float:
    while vm.running and vm.elapsed() - since < plan.recover_s:
        time.sleep(1.0)
        answered = [s.at_s for s in list(sampler.samples) if s.at_s > since and s.banner == timeline.BANNER_OK]
        if answered:
            return answered[0]
    raise ScenarioFailed(f"sshd did not answer within {plan.recover_s:.0f}s of the reboot")


def _probe(keys: Keys, port: int, vm: Vm, plan: RecoveryPlan, since: float) -> tuple[str, str]:
    """`trainguard probe` with login, host key checked strictly, until it logs in or time is up:
    (verdict, summary)."""
    command = [
        sys.executable,
        "-m",
        "healthcheck",
        "probe",
        "--json",
        "--timeout",
        "30",
        "-l",
        USER,
        "-i",
        str(keys.login),
        "--known-hosts",
        str(keys.known_hosts(port)),
        "--host-key-policy",
        "strict",
        f"127.0.0.1:{port}",
    ]
    verdict, summary = "PROBE_ERROR", ""
    while vm.running and vm.elapsed() - since < plan.recover_s:
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        verdict, summary = probe_answer(done.stdout)
        if verdict in ("HEALTHY", "DEGRADED"):
            break
        time.sleep(3.0)
    return verdict, summary
