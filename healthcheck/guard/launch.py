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
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from healthcheck import contract
from healthcheck.arguments import bounded
from healthcheck.console import Console
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.guard import fit, units
from healthcheck.guard.host import Host
from healthcheck.guard.readings import GpuMemory, ReadingError
from healthcheck.status import Status

SAMPLE_INTERVAL_S = 10.0
WAIT_POLL_S = 10.0
STOP_TIMEOUT_S = 120.0  # systemd waits up to 90 s (DefaultTimeoutStopSec) before SIGKILL
ALIVE_STATES = ("active", "activating", "reloading")
DAY_S = 86400.0
# The worker library's report is a few hundred bytes; anything far larger is not one.
REPORT_MAX_BYTES = 1 << 20


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    launch = commands.add_parser(
        "launch",
        help="start a training command N times in the training slice: canary first, staggered, only what fits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --workers N [options] -- COMMAND... | --status | --stop",
        epilog="{worker} in COMMAND becomes the worker's index. Each worker gets its budget in its environment "
        "and the worker library (import trainguard_worker) on its PYTHONPATH. "
        f"Output: {units.log_path(0).with_name('worker-N.log')}. "
        "Exit status: 0 all started (or --status: all running), 1 fewer started (--fit, or waited too long) "
        "or a worker failed, 2 the canary died or too few fit, 3 bad input or no slice; "
        "130 (143) on Ctrl-C (SIGTERM), which leaves the started workers running.",
    )
    what = launch.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="show the workers and the slice's memory")
    what.add_argument("--stop", action="store_true", help="stop every worker cleanly (SIGTERM, then systemd's timeout)")
    launch.add_argument(
        "--workers",
        type=bounded(int, 1, 1000, "--workers"),
        metavar="N",
        help="how many workers to start, the canary included (1 to 1000)",
    )
    launch.add_argument(
        "--stagger",
        type=bounded(float, 0, DAY_S, "--stagger"),
        default=300.0,
        metavar="S",
        help="seconds between starts (300; at most a day)",
    )
    launch.add_argument(
        "--canary-seconds",
        type=bounded(float, 0, DAY_S, "--canary-seconds"),
        default=300.0,
        metavar="S",
        help="canary period (300; at most a day)",
    )
    launch.add_argument(
        "--headroom",
        type=bounded(float, 0, 10, "--headroom"),
        default=0.2,
        metavar="F",
        help="margin on the canary's peaks (0.2; 0 to 10)",
    )
    launch.add_argument("--fit", action="store_true", help="start only what fits instead of refusing")
    launch.add_argument(
        "--max-wait",
        type=bounded(float, 0, 7 * DAY_S, "--max-wait"),
        default=1800.0,
        metavar="S",
        help="give up waiting for room after S seconds (1800; at most a week)",
    )
    launch.add_argument(
        "--batch-size",
        type=bounded(int, 1, 1_000_000, "--batch-size"),
        metavar="B",
        help="the batch per worker: {batch} in COMMAND and TRAINGUARD_BATCH_SIZE become B, and the fit says the"
        " largest batch per worker that fits",
    )
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training command")
    launch.set_defaults(run=run_launch)


def run_launch(args: argparse.Namespace, console: Console, host: Host | None = None) -> int:
    host = host or Host()
    if not host.bundle_env.exists():
        raise UsageError(
            "trainguard launch runs on a training instance, where the stack installed it: log in there "
            "(ssh ubuntu@HOST) and run sudo trainguard launch ... (this machine has no "
            f"{host.bundle_env})"
        )
    if host.which("systemctl") is None:
        raise UsageError(
            "systemctl is not installed here: trainguard launch starts workers as systemd units, on the training"
            " instance the stack set up"
        )
    if args.status:
        return show_status(host, console)
    if host.euid() != 0:
        raise UsageError("trainguard launch starts system units: run it with sudo")
    if args.stop:
        return stop_all(host, console)
    return Launcher(host, console, _plan(args, host)).launch()


@dataclass(frozen=True)
class Plan:
    workers: int
    stagger: float
    canary_seconds: float
    headroom: float
    fit: bool
    max_wait: float
    command: tuple[str, ...]
    working_directory: str
    batch_size: int | None = None


def _plan(args: argparse.Namespace, host: Host) -> Plan:
    """What to start, from arguments whose bounds argparse has checked."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no training command: put it after --, e.g. trainguard launch --workers 4 -- python train.py")
    if args.workers is None:
        raise UsageError("--workers N is required, N at least 1")
    try:
        working_directory = host.cwd()
    except FileNotFoundError:
        raise UsageError(
            "the current folder no longer exists (deleted or moved): cd into the training folder and run it again;"
            " the workers start in it"
        ) from None
    return Plan(
        workers=args.workers,
        stagger=args.stagger,
        canary_seconds=args.canary_seconds,
        headroom=args.headroom,
        fit=args.fit,
        max_wait=args.max_wait,
        command=tuple(command),
        working_directory=working_directory,
        batch_size=args.batch_size,
    )


class Launcher:
    def __init__(self, host: Host, console: Console, plan: Plan) -> None:
        self.host, self.console, self.plan = host, console, plan
        self.started: list[int] = []
        self.target = plan.workers
        self.slice_max = 0
        self.gpu_total_mib: list[int] = []
        self._gpu_warned = False

    def say(self, text: str) -> None:
        self.console.say(text)

    def launch(self) -> int:
        self.slice_max = self._slice_memory_max()
        self._refuse_if_running()
        self.host.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._launch()
        except (KeyboardInterrupt, Terminated) as cause:  # the workers are systemd units: they outlive the launcher
            started = ", ".join(map(str, self.started)) or "none"
            progress = f"started workers ({started}) keep running; stop them with: trainguard launch --stop"
            raise Interrupted(cause, progress) from None
        except ReadingError as error:  # a kernel or systemd file in a form it does not know: stop, say which
            self.console.error(f"{error}; {self._stop_started()}")
            return Status.UNKNOWN
        except Exception:  # a bug: never leave a worker running that nobody watches the start of
            self._stop_started()
            raise

    def _stop_started(self) -> str:
        """Stop the workers this launch started; says what it did."""
        if not self.started:
            return "no worker was started"
        names = [units.unit_name(worker) for worker in self.started]
        stopped = self.host.run(units.stop_argv(names), STOP_TIMEOUT_S)
        which = ", ".join(map(str, self.started))
        return f"stopped the workers it had started ({which})" if stopped.ok else f"could not stop workers {which}"

    def _launch(self) -> int:
        self.say(f"{units.SLICE}: MemoryMax {fit.human(self.slice_max)}")
        self.gpu_total_mib = [gpu.total_mib for gpu in self._gpus()]
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
            slice_memory_max=self.slice_max,
            gpus=self._gpus(),
        )
        for line in result.arithmetic:
            self.say(line)
        batch = self._batch_fit(peak)
        if result.workers < self.target:
            if not self.plan.fit:
                stopped = self.host.run(units.stop_argv([units.unit_name(0)]), STOP_TIMEOUT_S)
                canary_state = "is stopped" if stopped.ok else f"could not be stopped: {stopped.why()}"
                keep = ""
                if batch is not None and batch.exact and 0 < batch.batch < (self.plan.batch_size or 0):
                    keep = f", or keep {self.target} workers with --batch-size {batch.batch}"
                self.say(
                    f"refused: only {result.workers} of {self.target} workers fit, limited by {result.limited_by}."
                    f" Worker 0 (the canary) {canary_state}."
                    f" Run again with --workers {max(result.workers, 1)}{keep}, or add --fit to start what fits."
                )
                return Status.CRITICAL
            self.target = max(result.workers, 1)
            self.say(f"--fit: starting {self.target} of {self.plan.workers} workers")
        limited = self.host.run(units.limit_argv(0, result.worker_memory_max), units.SYSTEMD_RUN_TIMEOUT_S)
        self.say(
            f"worker 0: MemoryMax {fit.human(result.worker_memory_max)}"
            if limited.ok
            else f"worker 0: could not set its MemoryMax ({limited.why()}); the slice still bounds it"
        )
        return self._start_rest(result.worker_memory_max)

    def _batch_fit(self, peak: int) -> fit.BatchFit | None:
        """With --batch-size: the largest batch per worker that fits the workers asked for, printed."""
        if self.plan.batch_size is None:
            return None
        baseline, batch_at_peak = self._canary_report()
        result = fit.safe_batch(
            canary_peak=peak,
            canary_batch=batch_at_peak or self.plan.batch_size,
            baseline=baseline,
            slice_memory_max=self.slice_max,
            workers=self.plan.workers,
            headroom=self.plan.headroom,
        )
        for line in result.arithmetic:
            self.say(line)
        return result

    def _canary_report(self) -> tuple[int | None, int | None]:
        """The canary's memory before its first batch and the batch at its peak, from the worker library's report
        in its results folder; (None, None) without one (a script that does not use the library)."""
        report = batch_report(self.host, 0)
        return _count(report.get("baseline_bytes"), 0), _count(report.get("batch_at_peak"), 1)

    def _gpus(self) -> list[GpuMemory]:
        try:
            return self.host.gpus()
        except ReadingError as error:
            self._warn_gpu(error)
            return []

    def _gpu_mib(self, worker: int) -> int:
        try:
            by_pid = self.host.gpu_mib_by_pid()
        except ReadingError as error:
            self._warn_gpu(error)
            return 0
        return self.host.worker_gpu_mib(worker, by_pid)

    def _warn_gpu(self, error: ReadingError) -> None:
        if not self._gpu_warned:
            self._gpu_warned = True
            self.console.warn(f"nvidia-smi: {error}; GPU memory is not counted")

    def _slice_memory_max(self) -> int:
        value = self.host.unit_properties(units.SLICE, ["MemoryMax"]).get("MemoryMax", "")
        if not value.isdigit():
            raise UsageError(
                f"{units.SLICE} has no MemoryMax ({value or 'not found'}): the instance setup"
                " (trainguard-setup-slice) has not run; run it as root, then retry"
            )
        if int(value) < fit.MIB:
            raise UsageError(
                f"{units.SLICE} has MemoryMax={value}, which leaves training no memory: run trainguard-setup-slice"
                " as root (it sizes the slice from this machine's RAM), then retry"
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
        user = self.host.environ.get("SUDO_USER")
        try:
            results = self.host.worker_folder(self.host.results_dir, worker, user)
            checkpoints = self.host.worker_folder(self.host.checkpoints_dir, worker, user)
        except (OSError, KeyError) as error:  # KeyError: no such user (pwd)
            self.say(f"worker {worker}: cannot prepare its folders ({error}); nothing more is started")
            return False
        shares = units.gpu_shares(self.target, self.gpu_total_mib)
        gpu = shares[worker] if worker < len(shares) else None
        share = units.Share(
            workers=self.target,
            memory_max=memory_max or self.slice_max,
            gpu=gpu[0] if gpu else None,
            gpu_memory_mib=gpu[1] if gpu else None,
        )
        spec = units.WorkerSpec(
            worker=worker,
            command=self.plan.command,
            working_directory=self.plan.working_directory,
            path=self.host.environ.get("PATH", os.defpath),
            memory_max=memory_max,
            user=user,
            log_dir=PurePosixPath(str(self.host.log_dir)),
            environment=units.worker_environment(
                worker,
                share,
                PurePosixPath(str(results.parent)),
                PurePosixPath(str(checkpoints.parent)),
                self.plan.batch_size,
                self.host.environ.get("PYTHONPATH", ""),
            ),
            batch_size=self.plan.batch_size,
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
            gpu_peak = max(gpu_peak, self._gpu_mib(0))
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

    def _start_rest(self, worker_memory_max: int) -> int:
        last_start = self.host.clock()
        for worker in range(1, self.target):
            wait = last_start + self.plan.stagger - self.host.clock()
            if wait > 0:
                self.say(f"worker {worker}: starting in {wait:.0f} s (--stagger)")
                self.host.sleep(wait)
            if not self._room_for_next(worker, worker_memory_max):
                return Status.WARNING
            if not self._start(worker, worker_memory_max):
                return Status.CRITICAL
            last_start = self.host.clock()
        self.say(f"started {len(self.started)} worker(s); watch them with: trainguard launch --status")
        return Status.OK if len(self.started) == self.plan.workers else Status.WARNING

    def _room_for_next(self, worker: int, worker_memory_max: int) -> bool:
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
                slice_memory_max=self.slice_max,
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


def batch_report(host: Host, worker: int) -> dict[str, object]:
    """A worker's trainguard-batch.json (the worker library's report), or {} when there is none to read."""
    path = host.results_dir / f"{contract.WORKER_DIR_PREFIX}{worker}" / contract.BATCH_REPORT_NAME
    text = host.read(path)
    if text is None or len(text) > REPORT_MAX_BYTES:
        return {}
    try:
        report = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return report if isinstance(report, dict) else {}


def _count(value: object, least: int) -> int | None:
    """A whole number of at least `least` from JSON, else None (JSON's true is no number here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= least else None


@dataclass(frozen=True)
class WorkerRow:
    worker: int
    state: str
    memory: int | None
    peak: int | None
    gpu_mib: int
    runtime_s: float | None
    last_line: str
    batch: int | None = None


def worker_rows(host: Host) -> list[WorkerRow]:
    try:
        by_pid = host.gpu_mib_by_pid()
    except ReadingError:  # nvidia-smi printed something else: the table shows no GPU memory
        by_pid = {}
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
                batch=_count(batch_report(host, worker).get("batch_size"), 1),
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
    header = f"{'worker':<7}{'state':<20}{'memory':>11}{'peak':>11}{'GPU MiB':>9}{'batch':>7}{'runtime':>9}"
    lines = [f"{header}  last log line"]
    lines.extend(
        f"{row.worker:<7}{row.state:<20}{_size(row.memory):>11}{_size(row.peak):>11}{row.gpu_mib:>9}"
        f"{row.batch if row.batch is not None else '-':>7}{_duration(row.runtime_s):>9}  {row.last_line[:80]}"
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
