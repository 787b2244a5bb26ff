"""Scenario 4 (degrade): the incident's 4 workers with the batch that got workers killed in `guarded`, now bending.

The stack's real setup in the guest, as in scenario 2 (2 GiB: the training slice has about 940 MiB), then the
repository's examples/train_bend.py through `trainguard launch --workers 4 --fit --batch-size 16`. Each worker's
memory grows with its batch and with its loader's queue, which fills for a minute, past the MemoryMax the launcher
gives it from the canary's first 20 s: what got the guarded scenario's workers killed. With the worker library on
their path each shrinks its batch as its memory nears that limit, and grows it back when there is room.

The host samples sshd's banner once a second throughout and follows, over one SSH connection that stays open (as
a person's session would), the launcher's output, the guard's record of the workers (trainguard-workers.json) and
each worker's batch report. At the end it pushes the results
and reads back from moto's S3 what a person (and `trainguard status`) would: the guard's record and each worker's
result.json. One worker's cgroup v2 files, read while it ran, are kept as evidence (cgroup-sample.txt).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from drill import timeline
from drill.guarded import (
    GUARD_JOURNAL,
    LAUNCH_DONE,
    LAUNCH_LOG,
    GuardedPlan,
    check_setup,
    finished,
    guard_events,
    killed,
    launch_command,
    worker_records,
    workers_started,
)
from drill.guest import SETUP_COMMANDS, GuestShell, guest_files
from drill.image import Image
from drill.local_aws import INSTANCE_ID, LocalAws, guest_aws_files
from drill.observe import Sampler
from drill.qemu import Accelerator, Vm
from drill.scenarios import Outcome, ScenarioFailed, Watcher, booted_shell, guest_vm, kept_on_failure, start_run
from drill.seed import GuestFile
from healthcheck import contract

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_bend.py"
EXAMPLE_PATH = "/opt/trainguard-drill/train_bend.py"
SAMPLED_WORKER = 2
# What the drill reads each round: the guard's record, then each worker's batch report, between markers.
_REPORT_MARK = "==> "
_REPORTS = (
    f"cat {LAUNCH_LOG}; echo '{_REPORT_MARK}launcher'; cat {contract.WORKERS_STATE_FILE} 2>/dev/null; "
    f"for f in {contract.RESULTS_DIR}/{contract.WORKER_DIR_PREFIX}*/{contract.BATCH_REPORT_NAME}; do "
    f'[ -f "$f" ] && echo "{_REPORT_MARK}$f" && cat "$f"; done'
)
_REPORT_PATH = re.compile(rf"/{contract.WORKER_DIR_PREFIX}(\d+)/")


@dataclass(frozen=True, kw_only=True)
class DegradePlan(GuardedPlan):
    """guarded's launcher settings and guest, the example's batch and length, and how long to wait for its end."""

    batch: int = 16
    steps: int = 150
    step_s: float = 1.0
    watch_s: float = 900.0
    # How often the drill looks over its one shared SSH connection.
    poll_s: float = 10.0


def example_command(plan: DegradePlan) -> str:
    return f"python3 {EXAMPLE_PATH} --batch {{batch}} --steps {plan.steps} --step-seconds {plan.step_s:g}"


@dataclass(frozen=True)
class Round:
    """What one look over SSH found: the launcher's output, the guard's records and the workers' batch reports."""

    launch_log: str
    records: dict[int, dict[str, object]]
    reports: dict[int, dict[str, object]]


def parse_round(text: str) -> Round:
    """One round's output of _REPORTS (the guard's records and the workers' reports by worker index)."""
    launch_log, _, rest = text.partition(f"{_REPORT_MARK}launcher\n")
    record_text, *reports = rest.split(_REPORT_MARK)
    batches = {}
    for report in reports:
        path, _, body = report.partition("\n")
        match = _REPORT_PATH.search(path)
        try:
            document = json.loads(body)
        except ValueError:
            continue
        if match and isinstance(document, dict):
            batches[int(match.group(1))] = document
    return Round(launch_log, worker_records(record_text), batches)


@dataclass
class _Followed:
    """What the drill saw over SSH while the workers ran."""

    launch_log: str = ""
    records: dict[int, dict[str, object]] = field(default_factory=dict)
    batches: dict[int, list[int]] = field(default_factory=dict)
    cgroup_sample: str = ""


def run_degrade(
    image: Image, accelerator: Accelerator, plan: DegradePlan = DegradePlan(), log: TextIO = sys.stderr
) -> Outcome:
    """Scenario 4: the workers bend. sshd must answer throughout; no worker may be killed; all must finish."""
    run_dir, events, note = start_run("degrade", log)
    files = {**guest_files(), **guest_aws_files(), EXAMPLE_PATH: GuestFile(EXAMPLE.read_bytes(), "0644")}
    with kept_on_failure(run_dir), LocalAws() as aws:
        bundle = aws.publish_bundle()
        keys, spec = guest_vm(
            run_dir,
            image,
            plan=plan,
            files=files,
            commands=[*SETUP_COMMANDS, f"install -d -o ubuntu {contract.RESULTS_DIR}"],
            time_limit_s=plan.boot_s + plan.watch_s + 600,
            stack_user_data=aws.user_data(bundle),
            guest_forwards=(aws.forward(),),
        )
        with Vm(spec, run_dir / "vm", accelerator, log=log) as vm:
            note(0.0, f"qemu started ({accelerator.description}, {plan.memory_mib} MiB, {plan.cpus} vCPU, no swap)")
            with Sampler(vm.ssh_port, vm.alive_port, vm.elapsed, on_sample=Watcher(note).sample) as sampler:
                shell = booted_shell(keys, vm, plan, note)
                check_setup(shell, vm.elapsed, note)
                launch = launch_command(plan, example_command(plan), f" --batch-size {plan.batch}")
                started = shell.run(launch)
                launch_at = vm.elapsed()
                if started.returncode != 0:
                    raise ScenarioFailed(f"could not start trainguard launch: {started.stderr.strip()}")
                note(
                    launch_at,
                    f"trainguard launch --workers {plan.workers} --fit --batch-size {plan.batch}"
                    f" -- {example_command(plan)}, as root over SSH",
                )
                looks = GuestShell(keys, vm.ssh_port, multiplexed=True)
                try:
                    followed = _follow(vm, looks, launch_at, plan, note)
                finally:
                    looks.close()
                samples = list(sampler.samples)
            # As the login user, as a training script would (root's push moves itself into system.slice).
            pushed = shell.run("trainguard-push --now", timeout=300)
            note(vm.elapsed(), f"results push at the end: {(pushed.stdout + pushed.stderr).strip()[-200:]}")
            in_s3 = _from_s3(aws, followed.records)
            guard = shell.run(GUARD_JOURNAL, 60)
            emails = aws.emails(wait_s=1.0)
            console = vm.console_text()
    return _outcome(launch_at, followed, in_s3, guard.stdout, emails, samples, console, events, accelerator)


def _follow(
    vm: Vm, shell: GuestShell, launch_at: float, plan: DegradePlan, note: Callable[[float, str], None]
) -> _Followed:
    """Until the launcher has ended and every worker it started has ended, or the watch ends."""
    seen_lines = 0
    followed = _Followed()
    states: dict[int, str] = {}
    while vm.running and vm.elapsed() - launch_at < plan.watch_s:
        time.sleep(plan.poll_s)
        looked = shell.run(_REPORTS, timeout=30)
        if looked.returncode != 0:
            continue
        found = parse_round(looked.stdout)
        followed.launch_log = found.launch_log
        lines = found.launch_log.splitlines()
        for line in lines[seen_lines:]:
            note(vm.elapsed(), f"launcher: {line}")
        seen_lines = len(lines)
        records, reports = found.records, found.reports
        followed.records = records or followed.records
        for worker, report in sorted(reports.items()):
            sizes = report.get("batch_sizes")
            if isinstance(sizes, list) and sizes != followed.batches.get(worker):
                note(
                    vm.elapsed(),
                    f"worker {worker}: batch sizes {'>'.join(map(str, sizes))} (level {report.get('level')})",
                )
                followed.batches[worker] = sizes
        for worker, record in sorted(records.items()):
            if states.get(worker) != record.get("state"):
                states[worker] = str(record.get("state"))
                status = record.get("exit_status")
                note(
                    vm.elapsed(),
                    f"guard's record: worker {worker} {states[worker]}"
                    + (f" (exit status {status})" if status is not None else ""),
                )
        if not followed.cgroup_sample and len(followed.batches.get(SAMPLED_WORKER, [])) > 1:
            followed.cgroup_sample = _cgroup_sample(shell)
        started = workers_started(followed.launch_log)
        done = LAUNCH_DONE in followed.launch_log and started > 0
        if done and sum(1 for record in records.values() if record.get("state") != "running") >= started:
            note(vm.elapsed(), f"the launcher and all {started} workers it started have ended")
            return followed
    if not vm.running:
        raise ScenarioFailed("the VM stopped during the scenario (time limit or crash)")
    note(vm.elapsed(), f"the watch ended after {plan.watch_s:.0f}s with workers still running")
    return followed


def _cgroup_sample(shell: GuestShell) -> str:
    """A running worker's cgroup v2 files and its parents', with its /proc/self/cgroup and mountinfo: what the worker
    library reads, as the kernel wrote it."""
    unit = f"{contract.WORKER_UNIT_PREFIX}{SAMPLED_WORKER}.service"
    script = (
        f"pid=$(systemctl show -p MainPID --value {unit}); "
        'for f in /proc/$pid/cgroup /proc/$pid/mountinfo; do echo "==> $f <=="; cat $f; done; '
        f"cd /sys/fs/cgroup/trainguard.slice && "
        f"for d in . {contract.TRAINING_SLICE} {contract.TRAINING_SLICE}/{unit}; do "
        "for f in memory.current memory.max memory.high memory.peak memory.stat memory.events memory.pressure; do "
        '[ -f "$d/$f" ] && echo "==> $d/$f <==" && cat "$d/$f"; done; done; '
        'echo "==> /proc/meminfo <=="; cat /proc/meminfo; uname -r'
    )
    return shell.run(f"sudo sh -c '{script}'", timeout=30).stdout


def _from_s3(aws: LocalAws, records: dict[int, dict[str, object]]) -> dict[str, object]:
    """What the push carried to moto's S3: the guard's record and each worker's result.json."""
    found: dict[str, object] = {}
    record = aws.object(f"{INSTANCE_ID}/{contract.WORKERS_STATE_NAME}")
    found["records"] = worker_records(record.decode(errors="replace")) if record else {}
    for worker in sorted(records):
        result = aws.object(f"{INSTANCE_ID}/{contract.WORKER_DIR_PREFIX}{worker}/result.json")
        try:
            found[f"result-{worker}"] = json.loads(result) if result else None
        except ValueError:
            found[f"result-{worker}"] = None
    return found


def _outcome(
    launch_at: float,
    followed: _Followed,
    in_s3: dict[str, object],
    guard_journal: str,
    emails: list[tuple[str, str]],
    samples: list[timeline.Sample],
    console: str,
    events: list[tuple[float, str]],
    accelerator: Accelerator,
) -> Outcome:
    end = samples[-1].at_s if samples else launch_at
    events.extend(guard_events(guard_journal))
    for subject, _ in emails:
        events.append((end, f"moto's SNS received the guard's email: {subject}"))
    kills = timeline.parse_kills(console)
    for kill in kills:
        kind = "the slice's limit" if kill.in_cgroup else "the kernel's OOM killer"
        events.append((kill.at_s if kill.at_s is not None else launch_at, f"{kind} killed {kill.name} ({kill.pid})"))
    records = in_s3.get("records")
    records = records if isinstance(records, dict) and records else followed.records
    results = {worker: in_s3.get(f"result-{worker}") for worker in followed.records}
    sizes: dict[str, list[int]] = {}
    for worker, result in sorted(results.items()):
        if isinstance(result, dict) and isinstance(result.get("batch_sizes"), list):
            sizes[str(worker)] = result["batch_sizes"]
        elif worker in followed.batches:
            sizes[str(worker)] = followed.batches[worker]
    complete = bool(results) and all(isinstance(result, dict) and result.get("finished") for result in results.values())
    events.append(
        (
            end,
            f"moto's S3: the guard's record of {len(records)} worker(s); result.json of"
            f" {sum(isinstance(result, dict) for result in results.values())} of {len(results)} workers",
        )
    )
    summary = timeline.summary(
        "degrade",
        freeze=timeline.freeze_seconds(samples, after_s=launch_at),
        worst_banner=timeline.worst_banner_latency_s(samples, after_s=launch_at),
        workers_started=workers_started(followed.launch_log),
        workers_finished=finished(records),
        workers_killed=max(killed(records), len(kills)),
        results_intact=complete,
        batch_sizes=sizes or None,
    )
    files = {"cgroup-sample.txt": followed.cgroup_sample} if followed.cgroup_sample else {}
    files["trainguard-workers.json"] = json.dumps(records, indent=1) + "\n"
    return Outcome(summary, sorted(events), samples, [], kills, console, accelerator.description, files)
