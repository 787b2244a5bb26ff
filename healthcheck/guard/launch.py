"""`trainguard launch`: start a training command N times inside trainguard-training.slice, canary first.

Worker 0 runs alone for --canary-seconds while its memory (cgroup), GPU memory
(nvidia-smi) and the host's memory pressure are sampled. If it dies, nothing
more starts. From its peaks, --headroom and the slice's MemoryMax, the
launcher prints how many workers fit; if fewer than --workers, it refuses (or,
with --fit, starts only those). The rest start --stagger seconds apart, each
with its own MemoryMax, and only while memory and pressure leave room.
Run as root (sudo): the workers run as the user who called sudo.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from healthcheck.console import Console
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.guard import fit, units
from healthcheck.guard.host import Host
from healthcheck.status import Status

SAMPLE_INTERVAL_S = 10.0
WAIT_POLL_S = 10.0
STOP_TIMEOUT_S = 120.0  # systemd waits up to 90 s (DefaultTimeoutStopSec) before SIGKILL
ALIVE_STATES = ("active", "activating", "reloading")


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    launch = commands.add_parser(
        "launch",
        help="start a training command N times in the training slice: canary first, staggered, only what fits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --workers N [options] -- COMMAND... | --status | --stop",
        epilog="{worker} in COMMAND becomes the worker's index. "
        f"Output: {units.log_path(0).with_name('worker-N.log')}. "
        "Exit status: 0 all started (or --status: all running), 1 fewer started (--fit, or waited too long) "
        "or a worker failed, 2 the canary died or too few fit, 3 bad input or no slice; "
        "130 (143) on Ctrl-C (SIGTERM), which leaves the started workers running.",
    )
    what = launch.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="show the workers and the slice's memory")
    what.add_argument("--stop", action="store_true", help="stop every worker cleanly (SIGTERM, then systemd's timeout)")
    launch.add_argument("--workers", type=int, metavar="N", help="how many workers to start, the canary included")
    launch.add_argument("--stagger", type=float, default=300.0, metavar="S", help="seconds between starts (300)")
    launch.add_argument("--canary-seconds", type=float, default=300.0, metavar="S", help="canary period (300)")
    launch.add_argument("--headroom", type=float, default=0.2, metavar="F", help="margin on the canary's peaks (0.2)")
    launch.add_argument("--fit", action="store_true", help="start only what fits instead of refusing")
    launch.add_argument(
        "--max-wait", type=float, default=1800.0, metavar="S", help="give up waiting for room after S seconds (1800)"
    )
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training command")
    launch.set_defaults(run=run_launch)


def run_launch(args: argparse.Namespace, console: Console, host: Host | None = None) -> int:
    host = host or Host()
    if args.status:
        return show_status(host, console)
    if host.euid() != 0:
        raise UsageError("trainguard launch starts system units: run it with sudo")
    if args.stop:
        return stop_all(host, console)
    return Launcher(host, console, _plan(args)).launch()


@dataclass(frozen=True)
class Plan:
    workers: int
    stagger: float
    canary_seconds: float
    headroom: float
    fit: bool
    max_wait: float
    command: tuple[str, ...]


def _plan(args: argparse.Namespace) -> Plan:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no training command: put it after --, e.g. trainguard launch --workers 4 -- python train.py")
    if args.workers is None or args.workers < 1:
        raise UsageError("--workers N is required, N at least 1")
    for name in ("stagger", "canary_seconds", "headroom", "max_wait"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more")
    return Plan(args.workers, args.stagger, args.canary_seconds, args.headroom, args.fit, args.max_wait, tuple(command))


class Launcher:
    def __init__(self, host: Host, console: Console, plan: Plan) -> None:
        self.host, self.console, self.plan = host, console, plan
        self.started: list[int] = []

    def say(self, text: str) -> None:
        self.console.say(text)

    def launch(self) -> int:
        slice_max = self._slice_memory_max()
        self._refuse_if_running()
        self.host.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._launch(slice_max)
        except (KeyboardInterrupt, Terminated) as cause:  # the workers are systemd units: they outlive the launcher
            started = ", ".join(map(str, self.started)) or "none"
            progress = f"started workers ({started}) keep running; stop them with: trainguard launch --stop"
            raise Interrupted(cause, progress) from None

    def _launch(self, slice_max: int) -> int:
        self.say(f"{units.SLICE}: MemoryMax {fit.human(slice_max)}")
        if not self._start(0, None):
            return Status.CRITICAL
        canary = self._canary_period()
        if canary is None:
            return Status.CRITICAL
        peak, gpu_mib = canary
        result = fit.fit_workers(
            canary_peak=peak,
            canary_gpu_mib=gpu_mib,
            headroom=self.plan.headroom,
            slice_memory_max=slice_max,
            gpus=self.host.gpus(),
        )
        for line in result.arithmetic:
            self.say(line)
        target = self.plan.workers
        if result.workers < target:
            if not self.plan.fit:
                stopped = self.host.run(units.stop_argv([units.unit_name(0)]), STOP_TIMEOUT_S)
                canary_state = "is stopped" if stopped.ok else f"could not be stopped: {stopped.why()}"
                self.say(
                    f"refused: only {result.workers} of {target} workers fit, limited by {result.limited_by}."
                    f" Worker 0 (the canary) {canary_state}."
                    f" Run again with --workers {max(result.workers, 1)}, or add --fit to start what fits."
                )
                return Status.CRITICAL
            target = max(result.workers, 1)
            self.say(f"--fit: starting {target} of {self.plan.workers} workers")
        limited = self.host.run(units.limit_argv(0, result.worker_memory_max), units.SYSTEMD_RUN_TIMEOUT_S)
        self.say(
            f"worker 0: MemoryMax {fit.human(result.worker_memory_max)}"
            if limited.ok
            else f"worker 0: could not set its MemoryMax ({limited.why()}); the slice still bounds it"
        )
        return self._start_rest(target, result.worker_memory_max, slice_max)

    def _slice_memory_max(self) -> int:
        value = self.host.unit_properties(units.SLICE, ["MemoryMax"]).get("MemoryMax", "")
        if not value.isdigit():
            raise UsageError(
                f"{units.SLICE} has no MemoryMax ({value or 'not found'}): the instance setup"
                " (trainguard-setup-slice) has not run; run it as root, then retry"
            )
        return int(value)

    def _refuse_if_running(self) -> None:
        names = self.host.worker_units()
        running = [name for name in names if self.host.unit_properties(name).get("ActiveState") in ALIVE_STATES]
        if running:
            raise UsageError(
                f"workers already running ({', '.join(running)}): see trainguard launch --status, or --stop them first"
            )
        if names:
            self.host.run(units.reset_failed_argv(names), units.SYSTEMD_RUN_TIMEOUT_S)

    def _start(self, worker: int, memory_max: int | None) -> bool:
        spec = units.WorkerSpec(
            worker=worker,
            command=self.plan.command,
            working_directory=self.host.cwd(),
            path=self.host.environ.get("PATH", os.defpath),
            memory_max=memory_max,
            user=self.host.environ.get("SUDO_USER"),
            log_dir=PurePosixPath(str(self.host.log_dir)),
        )
        done = self.host.run(units.systemd_run_argv(spec), units.SYSTEMD_RUN_TIMEOUT_S)
        if not done.ok:
            self.say(f"worker {worker}: systemd-run failed: {done.why()}; nothing more is started")
            return False
        self.started.append(worker)
        self.say(f"worker {worker}: started as {units.unit_name(worker)}, log {units.log_path(worker, spec.log_dir)}")
        return True

    def _alive(self, worker: int) -> tuple[bool, str]:
        properties = self.host.unit_properties(units.unit_name(worker))
        state = properties.get("ActiveState", "unknown")
        if state in ALIVE_STATES:
            return True, state
        result, status = properties.get("Result", "unknown"), properties.get("ExecMainStatus", "?")
        return False, f"{state}, result {result}, exit status {status}"

    def _canary_period(self) -> tuple[int, int] | None:
        """Sample worker 0 until the period ends: (memory peak, GPU MiB peak), or None when it died."""
        started = self.host.clock()
        gpu_peak = 0
        self.say(f"worker 0: canary for {self.plan.canary_seconds:g} s; nothing else starts until it ends")
        while True:
            alive, state = self._alive(0)
            current, peak = self.host.worker_memory(0)
            gpu_peak = max(gpu_peak, self.host.worker_gpu_mib(0, self.host.gpu_mib_by_pid()))
            pressure = self.host.pressure()
            elapsed = self.host.clock() - started
            if not alive:
                last = self.host.last_log_line(0)
                self.say(
                    f"worker 0 died in the canary period after {elapsed:.0f} s ({state});"
                    f" peak memory {fit.human(peak or 0)}. Nothing more is started."
                    + (f" Last log line: {last}" if last else "")
                )
                return None
            self.say(
                f"  {elapsed:5.0f} s  memory {fit.human(current or 0)} (peak {fit.human(peak or 0)}),"
                f" GPU {gpu_peak} MiB, pressure some {pressure.some_avg10:.1f}% full {pressure.full_avg10:.1f}%"
            )
            if elapsed >= self.plan.canary_seconds:
                break
            self.host.sleep(min(SAMPLE_INTERVAL_S, self.plan.canary_seconds - elapsed))
        if peak is None:
            self.say(
                f"worker 0: its memory could not be read under {self.host.cgroup_root / units.unit_cgroup(0)}"
                " (cgroup v2 needed); nothing more is started"
            )
            return None
        return peak, gpu_peak

    def _start_rest(self, target: int, worker_memory_max: int, slice_max: int) -> int:
        last_start = self.host.clock()
        for worker in range(1, target):
            wait = last_start + self.plan.stagger - self.host.clock()
            if wait > 0:
                self.say(f"worker {worker}: starting in {wait:.0f} s (--stagger)")
                self.host.sleep(wait)
            if not self._room_for_next(worker, worker_memory_max, slice_max):
                return Status.WARNING
            if not self._start(worker, worker_memory_max):
                return Status.CRITICAL
            last_start = self.host.clock()
        self.say(f"started {len(self.started)} worker(s); watch them with: trainguard launch --status")
        return Status.OK if len(self.started) == self.plan.workers else Status.WARNING

    def _room_for_next(self, worker: int, worker_memory_max: int, slice_max: int) -> bool:
        """Wait until memory and pressure allow the next start; False (and why) when a worker died or time ran out."""
        deadline = self.host.clock() + self.plan.max_wait
        said = ""
        while True:
            for earlier in self.started:
                alive, state = self._alive(earlier)
                if not alive:
                    self.say(f"worker {earlier} ended ({state}); worker {worker} and later are not started")
                    return False
            current, _ = self.host.slice_memory()
            decision = fit.may_start_next(
                running_workers=len(self.started),
                worker_memory_max=worker_memory_max,
                slice_current=current or 0,
                slice_memory_max=slice_max,
                mem_available=self.host.meminfo().get("MemAvailable", 0),
                pressure=self.host.pressure(),
            )
            if decision.start:
                self.say(f"worker {worker}: {decision.reason}")
                return True
            if self.host.clock() >= deadline:
                self.say(
                    f"worker {worker}: gave up after waiting {self.plan.max_wait:g} s ({decision.reason});"
                    f" {len(self.started)} worker(s) run"
                )
                return False
            if decision.reason != said:
                self.say(f"worker {worker}: waiting: {decision.reason}")
                said = decision.reason
            self.host.sleep(WAIT_POLL_S)


@dataclass(frozen=True)
class WorkerRow:
    worker: int
    state: str
    memory: int | None
    peak: int | None
    gpu_mib: int
    runtime_s: float | None
    last_line: str


def worker_rows(host: Host) -> list[WorkerRow]:
    by_pid = host.gpu_mib_by_pid()
    rows = []
    for name in host.worker_units():
        worker = units.worker_of(name)
        assert worker is not None  # worker_units() keeps worker units only
        properties = host.unit_properties(name)
        state = properties.get("ActiveState", "unknown")
        if state == "failed":
            state = f"failed ({properties.get('Result', '?')})"
        entered = properties.get("ActiveEnterTimestampMonotonic", "0")
        running = properties.get("ActiveState") in ALIVE_STATES and entered.isdigit() and int(entered) > 0
        memory, peak = host.worker_memory(worker)
        rows.append(
            WorkerRow(
                worker=worker,
                state=state,
                memory=memory,
                peak=peak,
                gpu_mib=host.worker_gpu_mib(worker, by_pid),
                runtime_s=host.clock() - int(entered) / 1e6 if running else None,
                last_line=host.last_log_line(worker),
            )
        )
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _size(value: int | None) -> str:
    return fit.human(value) if value is not None else "-"


def render_status(rows: Sequence[WorkerRow], slice_current: int | None, slice_max: int | None) -> str:
    """The --status table (pure)."""
    lines = [f"{'worker':<7}{'state':<20}{'memory':>11}{'peak':>11}{'GPU MiB':>9}{'runtime':>9}  last log line"]
    lines.extend(
        f"{row.worker:<7}{row.state:<20}{_size(row.memory):>11}{_size(row.peak):>11}{row.gpu_mib:>9}"
        f"{_duration(row.runtime_s):>9}  {row.last_line[:80]}"
        for row in rows
    )
    if not rows:
        lines.append("(no workers)")
    use = f"{_size(slice_current)} of {_size(slice_max)}"
    if slice_current is not None and slice_max:
        use += f" ({100 * slice_current / slice_max:.0f}%)"
    lines.append(f"{units.SLICE}: {use}")
    return "\n".join(lines)


def show_status(host: Host, console: Console) -> int:
    rows = worker_rows(host)
    current, limit = host.slice_memory()
    console.say(render_status(rows, current, limit))
    return Status.WARNING if any(row.state.startswith("failed") for row in rows) else Status.OK


def stop_all(host: Host, console: Console) -> int:
    names = host.worker_units()
    if not names:
        console.say("no workers to stop")
        return Status.OK
    done = host.run(units.stop_argv(names), STOP_TIMEOUT_S)
    for row in worker_rows(host):
        console.say(f"worker {row.worker}: {row.state}")
    if not done.ok:
        console.say(f"systemctl stop failed: {done.why()}")
        return Status.CRITICAL
    return Status.OK
