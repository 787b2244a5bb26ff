"""Scenario 2 (guarded): the stack's real on-instance setup in the VM, then the same 4 workers through
`trainguard launch --workers 4 --fit`.

The guest boots with the stack's user data, which fetches the bundle from
moto's S3 (through the guestfwd relay) and runs trainguard-apply: the training
slice, earlyoom, the guard, the PSI publisher and the results timer. Results
written before the pressure are pushed, and read back from moto's S3. The
launcher starts the workers in the slice; the host samples sshd's banner about
once a second throughout, and collects the launcher's output, the kills on the
serial console, the guard's log and its emails from moto's SNS.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from drill import timeline
from drill.guest import SETUP_COMMANDS, WORKER_PATH, GuestShell, guest_files
from drill.image import Image
from drill.local_aws import INSTANCE_ID, LocalAws, guest_aws_files
from drill.observe import Sampler
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
from healthcheck import contract

BEFORE_PRESSURE = "before-pressure.txt"
LAUNCH_LOG = "/tmp/trainguard-launch.log"
LAUNCH_DONE = "trainguard launch exited with status"
# What trainguard-apply and its scripts print (and skip), as the cloud-init output log has it.
SETUP_LINE = re.compile(r"^trainguard[\w-]*: .*$", re.MULTILINE)
_STARTED = re.compile(r"^worker (\d+): started as ", re.MULTILINE)
# journalctl -o short-monotonic: "[  123.456789] host unit[pid]: text".
_JOURNAL = re.compile(r"^\[\s*(\d+\.\d+)\] \S+ [^:]+: (.*)$", re.MULTILINE)
GUARD_JOURNAL = "sudo journalctl -u trainguard-guard.service -o short-monotonic --no-pager"


@dataclass(frozen=True, kw_only=True)
class GuardedPlan(GuestPlan):
    """The launcher's settings (a short canary period) and how long to watch after it starts."""

    canary_s: float = 20.0
    stagger_s: float = 5.0
    watch_s: float = 150.0
    # The guard's AWS CLI calls take tens of seconds each under emulation: how long to wait for its email.
    email_wait_s: float = 180.0
    # The stack's setup keeps max(1 GiB, 8 %) of RAM out of the training slice (healthcheck.guard.fit), and
    # refuses a 1 GiB machine (it leaves nothing for training): 2 GiB gives the slice about 1 GiB, less than
    # the 4 workers' 1.4 GB, so the pressure is real and stays inside the slice.
    memory_mib: int = 2048


def launch_command(
    plan: GuardedPlan, command: str = f"python3 {WORKER_PATH} {{worker}} 4 350", options: str = ""
) -> str:
    """Start `trainguard launch --fit` as root in the background (it outlives the SSH session); it ends its log with
    its exit status."""
    launch = (
        f"sudo trainguard launch --workers {plan.workers} --fit --canary-seconds {plan.canary_s:g}"
        f" --stagger {plan.stagger_s:g}{options} -- {command}"
    )
    return f"nohup sh -c '{launch}; echo \"{LAUNCH_DONE} $?\"' >{LAUNCH_LOG} 2>&1 </dev/null & echo started"


def workers_started(launch_log: str) -> int:
    return len(set(_STARTED.findall(launch_log)))


def worker_records(text: str) -> dict[int, dict[str, object]]:
    """The guard's trainguard-workers.json (its records by worker index); {} when it is not there or not one."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    workers = document.get("workers") if isinstance(document, dict) else None
    return {
        item["worker"]: item for item in workers or [] if isinstance(item, dict) and isinstance(item.get("worker"), int)
    }


def finished(records: dict[int, dict[str, object]]) -> int:
    """Workers that ran to their end: exited with status 0."""
    return sum(1 for record in records.values() if record.get("state") == "exited" and record.get("exit_status") == 0)


def killed(records: dict[int, dict[str, object]]) -> int:
    return sum(1 for record in records.values() if record.get("state") in ("oom_killed", "killed"))


def journal_events(journal: str, marker: str) -> list[tuple[float, str]]:
    """(guest uptime, text) for each journal line whose text starts with `marker`."""
    return [(float(at), text) for at, text in _JOURNAL.findall(journal) if text.startswith(marker)]


def guard_events(journal: str) -> list[tuple[float, str]]:
    """The guard's own log lines, as timeline events."""
    return [
        (at, f"guard: {text.removeprefix('trainguard-guard: ')}")
        for at, text in journal_events(journal, "trainguard-guard:")
    ]


def run_guarded(
    image: Image, accelerator: Accelerator, plan: GuardedPlan = GuardedPlan(), log: TextIO = sys.stderr
) -> Outcome:
    """Scenario 2: the guarded host. sshd must answer throughout; the slice, not the kernel, takes the kills."""
    run_dir, events, note = start_run("guarded", log)

    with kept_on_failure(run_dir), LocalAws() as aws:
        bundle = aws.publish_bundle()
        keys, spec = guest_vm(
            run_dir,
            image,
            plan=plan,
            files={**guest_files(), **guest_aws_files()},
            commands=[*SETUP_COMMANDS, f"install -d -o ubuntu {contract.RESULTS_DIR}"],
            time_limit_s=plan.boot_s + plan.watch_s + 300,
            stack_user_data=aws.user_data(bundle),
            guest_forwards=(aws.forward(),),
        )
        with Vm(spec, run_dir / "vm", accelerator, log=log) as vm:
            note(0.0, f"qemu started ({accelerator.description}, {plan.memory_mib} MiB, {plan.cpus} vCPU, no swap)")
            note(0.0, f"the stack's bundle {bundle.version} ({bundle.size} bytes) is in moto's S3 at {bundle.key}")
            with Sampler(vm.ssh_port, vm.alive_port, vm.elapsed, on_sample=Watcher(note).sample) as sampler:
                shell = booted_shell(keys, vm, plan, note)
                check_setup(shell, vm.elapsed, note)
                pushed = push_before_pressure(shell, aws, vm.elapsed, note)
                started = shell.run(launch_command(plan))
                launch_at = vm.elapsed()
                if started.returncode != 0:
                    raise ScenarioFailed(f"could not start trainguard launch: {started.stderr.strip()}")
                note(launch_at, f"trainguard launch --workers {plan.workers} --fit started, as root over SSH")
                launch_log = _watch(vm, shell, launch_at, plan, note)
                samples = list(sampler.samples)
            emails = aws.emails(wait_s=plan.email_wait_s, until_first=True)
            guard = shell.run(GUARD_JOURNAL, 60)
            records = worker_records(shell.run(f"cat {contract.WORKERS_STATE_FILE}", 30).stdout)
            still_there = aws.object(f"{INSTANCE_ID}/{BEFORE_PRESSURE}")
            console = vm.console_text()
    evidence = _Evidence(
        launch_at, launch_log, guard.stdout, emails, pushed is not None and still_there == pushed, records
    )
    return _guarded_outcome(evidence, samples, console, events, accelerator)


@dataclass(frozen=True)
class _Evidence:
    launch_at: float
    launch_log: str
    guard_journal: str
    emails: list[tuple[str, str]]
    results_intact: bool
    records: dict[int, dict[str, object]]


def _guarded_outcome(
    evidence: _Evidence,
    samples: list[timeline.Sample],
    console: str,
    events: list[tuple[float, str]],
    accelerator: Accelerator,
) -> Outcome:
    end = samples[-1].at_s if samples else evidence.launch_at
    events.extend(guard_events(evidence.guard_journal))
    for subject, _ in evidence.emails:
        events.append((end, f"moto's SNS received the guard's email: {subject}"))
    if not evidence.emails:
        events.append((end, "moto's SNS received no email from the guard"))
    kills = timeline.parse_kills(console)
    for kill in kills:
        kind = "the slice's limit" if kill.in_cgroup else "the kernel's OOM killer"
        at = kill.at_s if kill.at_s is not None else evidence.launch_at
        events.append((at, f"{kind} killed {kill.name} ({kill.pid})"))
    summary = timeline.summary(
        "guarded",
        freeze=timeline.freeze_seconds(samples, after_s=evidence.launch_at),
        worst_banner=timeline.worst_banner_latency_s(samples, after_s=evidence.launch_at),
        workers_started=workers_started(evidence.launch_log),
        workers_finished=finished(evidence.records),
        workers_killed=sum(1 for kill in kills if kill.worker),
        results_intact=evidence.results_intact,
    )
    return Outcome(summary, sorted(events), samples, [], kills, console, accelerator.description)


def check_setup(shell: GuestShell, elapsed: Callable[[], float], note: Callable[[float, str], None]) -> None:
    """What trainguard-apply said (its skips included), and that what it starts is running."""
    output = shell.run("sudo cat /var/log/cloud-init-output.log", timeout=60)
    for line in SETUP_LINE.findall(output.stdout):
        note(elapsed(), f"setup: {line}")
    units = "trainguard-guard.service trainguard-psi.service earlyoom.service trainguard-push-results.timer"
    active = shell.run(f"systemctl is-active {units}; systemctl show -p MemoryMax --value trainguard-training.slice")
    states = active.stdout.split()
    note(elapsed(), f"setup: {', '.join(f'{u} {s}' for u, s in zip(units.split(), states, strict=False))}")
    if "bundle" not in output.stdout or states[:1] != ["active"]:
        said = "; ".join(SETUP_LINE.findall(output.stdout)) or output.stdout[-800:] + output.stderr
        raise ScenarioFailed(f"the stack's setup did not complete in the guest (the guard is not running): {said}")
    note(elapsed(), f"setup: trainguard-training.slice MemoryMax={states[-1]}")


def push_before_pressure(
    shell: GuestShell, aws: LocalAws, elapsed: Callable[[], float], note: Callable[[float, str], None]
) -> bytes | None:
    """Write a result, run the push as its timer would, and read it back from moto's S3.

    The push holds back files modified in the last 30 s (they may be half written), so the result is
    dated two minutes back, as one written before the last timer round would be.
    """
    content = f"results written at {time.time():.0f}, before any pressure\n".encode()
    path = f"{contract.RESULTS_DIR}/{BEFORE_PRESSURE}"
    pushed = shell.run(
        f"printf %s '{content.decode().strip()}' >{path} && echo >>{path} && touch -d '2 minutes ago' {path}"
        " && sudo systemctl start trainguard-push-results.service",
        timeout=180,
    )
    found = aws.object(f"{INSTANCE_ID}/{BEFORE_PRESSURE}")
    digest = hashlib.sha256(content).hexdigest()[:12]
    if pushed.returncode == 0 and found == content:
        note(elapsed(), f"results push: {path} (sha256 {digest}) is in moto's S3 at {INSTANCE_ID}/{BEFORE_PRESSURE}")
        return content
    note(elapsed(), f"results push FAILED (status {pushed.returncode}): {pushed.stderr.strip()[-300:]}")
    return None


def _watch(vm: Vm, shell: GuestShell, launch_at: float, plan: GuardedPlan, note: Callable[[float, str], None]) -> str:
    """Follow the launcher's output over SSH (itself a sign sshd answers) until the watch ends; returns the log."""
    seen = 0
    text = ""
    while vm.running and vm.elapsed() - launch_at < plan.watch_s:
        time.sleep(5.0)
        current = shell.run(f"cat {LAUNCH_LOG}", timeout=20)
        if current.returncode == 0:
            text = current.stdout
            lines = text.splitlines()
            for line in lines[seen:]:
                note(vm.elapsed(), f"launcher: {line}")
            seen = len(lines)
    if not vm.running:
        raise ScenarioFailed("the VM stopped during the scenario (time limit or crash)")
    return text
