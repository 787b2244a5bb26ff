"""The drill's scenario 1 (unguarded) and what every scenario shares; scenario 2 is in guarded.py, 3 in recovery.py,
4 in degrade.py.

Each scenario boots a fresh VM (a new overlay over the cached image), observes
it from the host, and returns its summary object and readable timeline.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from drill import timeline
from drill.guest import SETUP_COMMANDS, GuestShell, Keys, guest_files, worker_start_command
from drill.image import Image, cache_root
from drill.observe import ProbeLoop, Sampler
from drill.qemu import Accelerator, GuestForward, Vm, VmSpec, remove_run_dir
from drill.seed import GuestFile, drill_cloud_config, user_data, write_seed_iso
from drill.timeline import BANNER_OK, Sample

Note = Callable[[float, str], None]


def start_run(name: str, log: TextIO) -> tuple[Path, list[tuple[float, str]], Note]:
    """A scenario's own folder under the cache's runs/, its timeline, and `note`, which adds to it and prints."""
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    events: list[tuple[float, str]] = []

    def note(at: float, text: str) -> None:
        events.append((at, text))
        print(f"  {at:+8.1f}s  {text}", file=log, flush=True)

    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=runs)), events, note


def guest_vm(
    run_dir: Path,
    image: Image,
    *,
    plan: GuestPlan,
    files: Mapping[str, GuestFile],
    commands: list[str],
    time_limit_s: float,
    stack_user_data: str | None = None,
    guest_forwards: tuple[GuestForward, ...] = (),
) -> tuple[Keys, VmSpec]:
    """A scenario's guest: its keys, its NoCloud seed (the drill's part, then the stack's user data) and its VM."""
    keys = Keys.generate(run_dir / "keys")
    seed = write_seed_iso(
        run_dir / "seed.iso",
        user_data(drill_cloud_config(keys.access(), files, commands), stack_user_data),
        instance_id=f"drill-{run_dir.name}",
    )
    spec = VmSpec(
        image=image,
        seed_iso=seed,
        memory_mib=plan.memory_mib,
        cpus=plan.cpus,
        guest_forwards=guest_forwards,
        time_limit_s=time_limit_s,
    )
    return keys, spec


@dataclass(frozen=True, kw_only=True)
class GuestPlan:
    """What every scenario's guest is: its size, how long it may take to boot, and how many workers it gets."""

    workers: int = 4
    # Until cloud-init has finished: about 200 s on an idle 2-core host under TCG; once over 600 s while other tests
    # loaded it.
    boot_s: float = 900.0
    memory_mib: int = 1024
    cpus: int = 2


def booted_shell(keys: Keys, vm: Vm, plan: GuestPlan, note: Callable[[float, str], None]) -> GuestShell:
    """A shell into the guest once cloud-init has finished; ScenarioFailed when it does not within plan.boot_s."""
    shell = GuestShell(keys, vm.ssh_port)
    if not shell.wait_for_boot(plan.boot_s, vm.elapsed, lambda: vm.running):
        raise ScenarioFailed(f"the guest did not finish booting within {plan.boot_s:.0f}s")
    note(vm.elapsed(), "cloud-init finished")
    return shell


@dataclass(frozen=True, kw_only=True)
class UnguardedPlan(GuestPlan):
    """How long to watch: until the freeze has lasted `freeze_goal_s` and the probe said HUNG, or `watch_s`."""

    freeze_goal_s: float = 90.0
    watch_s: float = 300.0


@dataclass
class Outcome:
    """What one scenario produced."""

    summary: dict[str, object]
    events: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    probe_runs: list[timeline.ProbeRun] = field(default_factory=list)
    kills: list[timeline.Kill] = field(default_factory=list)
    console: str = ""
    accelerator: str = ""
    # More evidence, written beside the rest: a relative path under the scenario's folder -> its text.
    files: dict[str, str] = field(default_factory=dict)


class ScenarioFailed(RuntimeError):
    """The scenario could not run to its end; the message says where it stopped."""


@contextlib.contextmanager
def kept_on_failure(run_dir: Path) -> Iterator[None]:
    """A scenario's run folder: its disks and keys always go; after a failure the guest's console stays for a
    person to read, and the failure names it; after a success nothing stays."""
    try:
        yield
    except ScenarioFailed as failed:
        raise ScenarioFailed(f"{failed}; the guest's console: {run_dir / 'vm' / 'console.log'}") from None
    finally:
        remove_run_dir(run_dir / "vm", keep=("console.log",))
        remove_run_dir(run_dir, keep=("vm",))
    shutil.rmtree(run_dir)


def run_unguarded(
    image: Image,
    accelerator: Accelerator,
    plan: UnguardedPlan = UnguardedPlan(),
    log: TextIO = sys.stderr,
    stack_user_data: str | None = None,
) -> Outcome:
    """Scenario 1: the incident. Workers started together over SSH, outside any slice, until sshd freezes."""
    run_dir, events, note = start_run("unguarded", log)

    with kept_on_failure(run_dir):
        keys, spec = guest_vm(
            run_dir,
            image,
            plan=plan,
            files=guest_files(),
            commands=SETUP_COMMANDS,
            time_limit_s=plan.boot_s + plan.watch_s + 120,
            stack_user_data=stack_user_data,
        )
        with Vm(spec, run_dir / "vm", accelerator, log=log) as vm:
            note(0.0, f"qemu started ({accelerator.description}, {plan.memory_mib} MiB, {plan.cpus} vCPU, no swap)")
            with Sampler(vm.ssh_port, vm.alive_port, vm.elapsed, on_sample=Watcher(note).sample) as sampler:
                shell = booted_shell(keys, vm, plan, note)
                started = shell.run(worker_start_command(plan.workers))
                pressure_at = vm.elapsed()
                pids = [int(word) for word in started.stdout.split() if word.isdigit()]
                if started.returncode != 0 or not pids:
                    raise ScenarioFailed(f"could not start the workers: {started.stderr.strip()}")
                note(pressure_at, f"{len(pids)} workers started together over SSH, outside any slice")
                with ProbeLoop(f"127.0.0.1:{vm.ssh_port}", vm.elapsed) as probes:
                    _watch(vm, sampler, probes, pressure_at, plan, note)
                samples, probe_runs = list(sampler.samples), list(probes.runs)
            console = vm.console_text()
    return _unguarded_outcome(samples, probe_runs, console, pressure_at, len(pids), events, accelerator)


def _watch(
    vm: Vm,
    sampler: Sampler,
    probes: ProbeLoop,
    pressure_at: float,
    plan: UnguardedPlan,
    note: Callable[[float, str], None],
) -> None:
    """Until the freeze has lasted long enough and the probe has said HUNG, or the watch ends."""
    said_hung = False
    while vm.running and vm.elapsed() - pressure_at < plan.watch_s:
        time.sleep(1.0)
        if not said_hung and any(run.verdict == "HUNG" for run in probes.runs):
            said_hung = True
            first = next(run for run in probes.runs if run.verdict == "HUNG")
            note(first.finished_s, "`trainguard probe --no-login` says HUNG")
        windows = [w for w in timeline.freeze_windows(list(sampler.samples)) if w.start_s >= pressure_at]
        current = windows[-1] if windows and windows[-1].open_at_end else None
        if said_hung and current is not None and current.seconds >= plan.freeze_goal_s:
            note(vm.elapsed(), f"still frozen after {current.seconds:.0f}s: enough, stopping the VM")
            return
    if not vm.running:
        raise ScenarioFailed("the VM stopped during the scenario (time limit or crash)")


class Watcher:
    """Turns the sample stream into timeline events: only changes are worth a line."""

    def __init__(self, note: Callable[[float, str], None]) -> None:
        self._note = note
        self._state: str | None = None

    def sample(self, sample: Sample) -> None:
        if sample.banner == BANNER_OK:
            state = "sshd answers"
        elif sample.kernel_alive:
            state = f"guest kernel answers, sshd does not ({sample.banner})"
        else:
            state = f"no sign of the guest kernel ({sample.banner})"
        if state != self._state:
            self._state = state
            detail = f" (banner in {sample.banner_s:.2f}s)" if sample.banner == BANNER_OK else ""
            self._note(sample.at_s, state + detail)


def _unguarded_outcome(
    samples: list[Sample],
    probe_runs: list[timeline.ProbeRun],
    console: str,
    pressure_at: float,
    workers_started: int,
    events: list[tuple[float, str]],
    accelerator: Accelerator,
) -> Outcome:
    kills = timeline.parse_kills(console)
    silence = timeline.longest_silence(samples, after_s=pressure_at)
    if silence is not None:
        window, alive = silence
        still = ", still silent when the drill stopped" if window.open_at_end else ""
        events.append(
            (
                window.start_s,
                f"no banner for {window.seconds:.0f}s{still}; the guest kernel answered {alive:.0%} of those samples",
            )
        )
    for kill in kills:
        kind = "the slice's limit" if kill.in_cgroup else "the kernel's OOM killer"
        events.append((kill.at_s if kill.at_s is not None else pressure_at, f"{kind} killed {kill.name} ({kill.pid})"))
    summary = timeline.summary(
        "unguarded",
        freeze=timeline.freeze_seconds(samples, after_s=pressure_at),
        hung=timeline.time_to_hung_s(probe_runs, pressure_at),
        worst_banner=timeline.worst_banner_latency_s(samples, after_s=pressure_at),
        workers_started=workers_started,
        workers_finished=0,  # the incident's workers run until something kills them
        workers_killed=sum(1 for kill in kills if kill.worker),
    )
    return Outcome(summary, events, samples, probe_runs, kills, console, accelerator.description)


def write_results(folder: Path, outcomes: dict[str, Outcome]) -> Path:
    """drill-results/summary.json (one object per scenario run) and, per scenario, its evidence."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, outcome in outcomes.items():
        scenario_dir = folder / name
        scenario_dir.mkdir(exist_ok=True)
        (scenario_dir / "console.log").write_text(outcome.console)
        (scenario_dir / "timeline.txt").write_text(timeline.render_timeline(outcome.events) + "\n")
        evidence = {
            "accelerator": outcome.accelerator,
            "samples": [asdict(sample) for sample in outcome.samples],
            "probe_runs": [asdict(run) for run in outcome.probe_runs],
            "kills": [asdict(kill) for kill in outcome.kills],
        }
        (scenario_dir / "evidence.json").write_text(json.dumps(evidence, indent=1) + "\n")
        for relative, text in outcome.files.items():
            path = scenario_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    path = folder / "summary.json"
    path.write_text(json.dumps([outcome.summary for outcome in outcomes.values()], indent=2) + "\n")
    return path
