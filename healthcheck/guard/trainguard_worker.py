"""trainguard_worker: a training worker's memory budget, its pressure now, a batch size that bends, safe checkpoints.

One module, standard library only, for Python 3.8 and newer: `trainguard launch` installs it as
/opt/trainguard/lib/trainguard_worker.py and puts that folder on each worker's PYTHONPATH, so the worker's own
Python (a virtualenv, conda, the Deep Learning AMI's PyTorch environment) imports it; no other module lives there,
so nothing is shadowed. It also runs outside trainguard: without the launcher's environment it reads the
process's own cgroup and the machine's memory.

    import trainguard_worker as tg

    model = build_model()                      # first: the advisor counts what is in use now as fixed
    advisor = tg.BatchAdvisor(64)
    for step in range(steps):
        batch = advisor.batch_size()           # every step; reads memory at most once a second
        ...
    tg.checkpoint(os.path.join(tg.budget().results_dir, "model.pt"), lambda path: torch.save(state, path))

What it reads (the kernel's Documentation/admin-guide/cgroup-v2.rst): the worker's cgroup v2 folder (the "0::"
line of /proc/self/cgroup under the cgroup2 mount of /proc/self/mountinfo) and each parent's memory.current,
memory.max, memory.high and memory.stat; the worker's own memory.peak (kernel 5.19 and newer; on older kernels
the highest memory.current this process has read stands in for it, and misses what rose and fell between
reads), memory.events ("high": the kernel throttled the cgroup) and memory.pressure (PSI); /proc/meminfo for the
machine. Memory in use is memory.current less inactive_file, the page cache the kernel reclaims first, as the
kubelet counts a container's working set (kubernetes.io/examples/admin/resource/memory-available.sh). GPU
memory comes from nvidia-smi, only when asked for (a call takes tens of milliseconds).

The names below (environment variables, files, the push's request folder) are healthcheck.contract's: this
module may import nothing of trainguard's, and a test checks that both agree.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

# --- What `trainguard launch` gives each worker (healthcheck.contract) ---------------------------------------
WORKER_VARIABLE = "TRAINGUARD_WORKER"
WORKER_COUNT_VARIABLE = "TRAINGUARD_WORKERS"
MEMORY_MAX_VARIABLE = "TRAINGUARD_MEMORY_MAX"
GPU_VARIABLE = "TRAINGUARD_GPU"
GPU_MEMORY_VARIABLE = "TRAINGUARD_GPU_MEMORY_MIB"
RESULTS_VARIABLE = "TRAINGUARD_WORKER_RESULTS_DIR"
CHECKPOINTS_VARIABLE = "TRAINGUARD_WORKER_CHECKPOINTS_DIR"
BATCH_SIZE_VARIABLE = "TRAINGUARD_BATCH_SIZE"
# Written by the advisor in the worker's results folder (pushed with it); `trainguard launch` reads the canary's.
BATCH_REPORT_NAME = "trainguard-batch.json"
# The guard pushes for a worker that asks here, outside the worker's memory limit (see push()).
PUSH_REQUEST_DIR = "/run/trainguard/push-requests"
PUSH_COMMAND = "trainguard-push"

KIB = 1024
MIB = 1024 * KIB
NVIDIA_SMI_TIMEOUT_S = 10.0
PUSH_TIMEOUT_S = 960.0  # the guard gives a requested push up to 900 s (push_requests.py)
REQUEST_POLL_S = 0.5
# The report is rewritten at each change, and otherwise at most this often: the push holds back files written
# in the last 30 s, so a file rewritten more often would never leave the instance while training runs.
REPORT_EVERY_S = 120.0
MAX_REPORTED_CHANGES = 100


class ReadingError(ValueError):
    """A file or command printed something that is not in the documented format."""


# --- Parsers (pure): the formats are the kernel's and nvidia-smi's -------------------------------------------


@dataclass(frozen=True)
class Pressure:
    """Memory pressure stall information: percent of the last 10 s some / all tasks stalled on memory."""

    some_avg10: float
    full_avg10: float


def parse_pressure(text: str) -> Pressure:
    """/proc/pressure/memory or a cgroup's memory.pressure: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and
    a "full" line (the kernel's Documentation/accounting/psi.rst)."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        lines[kind] = dict(part.split("=", 1) for part in rest.split() if "=" in part)
    try:
        some, full = float(lines["some"]["avg10"]), float(lines["full"]["avg10"])
    except (KeyError, ValueError):
        raise ReadingError(f"not a pressure file (no some/full avg10): {text[:80]!r}") from None
    if not (math.isfinite(some) and math.isfinite(full)):
        raise ReadingError(f"not a pressure file (avg10 not a number): {text[:80]!r}")
    return Pressure(some_avg10=some, full_avg10=full)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo ("MemTotal:       24684096 kB", proc(5)) as bytes per field."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if not parts or not parts[0].isdigit():
            continue
        fields[name.strip()] = int(parts[0]) * (KIB if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in fields:
        raise ReadingError("no MemTotal in /proc/meminfo")
    return fields


def parse_cgroup_bytes(text: str) -> int | None:
    """memory.current, memory.peak, memory.max, memory.high: bytes, or None for "max" (no limit)."""
    value = text.strip()
    if value == "max":
        return None
    if not value.isdigit():
        raise ReadingError(f"not a cgroup memory value: {value[:40]!r}")
    return int(value)


def parse_keyed(text: str) -> dict[str, int]:
    """memory.stat, memory.events: "name value" lines (cgroup-v2.rst's flat keyed files)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


@dataclass(frozen=True)
class GpuMemory:
    total_mib: int
    used_mib: int


def parse_mib(text: str) -> int | None:
    """One nvidia-smi value in MiB (nounits), or None for "[N/A]", "[Not Supported]"."""
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_gpu_memory(text: str) -> list[GpuMemory]:
    """nvidia-smi --query-gpu=memory.total,memory.used --format=csv,noheader,nounits: one line per GPU, MiB
    without units, "[N/A]" where the driver has no value (nvidia-smi(1))."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [parse_mib(part) for part in line.split(",")]
        if len(fields) != 2 or fields[0] is None:
            raise ReadingError(f"not a memory.total,memory.used line: {line[:80]!r}")
        gpus.append(GpuMemory(total_mib=fields[0], used_mib=fields[1] or 0))
    return gpus


def _unescape_mount(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


def cgroup_v2_location(self_cgroup: str, mountinfo: str) -> tuple[str, str] | None:
    """(the cgroup2 mount point, this process's cgroup path below it) from /proc/self/cgroup and
    /proc/self/mountinfo (proc(5)); None without cgroup v2."""
    path = next((line[3:] for line in self_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return None
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields = before.split()
        if separator and after.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            root, mount = _unescape_mount(fields[3]), _unescape_mount(fields[4])
            if root != "/" and (path == root or path.startswith(root + "/")):
                path = path[len(root) :] or "/"
            return mount, path
    return None


# --- What the worker uses now ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One memory limit on the worker: its own cgroup, a parent (the training slice), or the machine.

    `in_use` is what the kernel cannot simply drop (memory.current less inactive_file; for the machine MemTotal
    less MemAvailable). `line` is the first limit the kernel acts at: memory.high (it throttles) or memory.max
    (it kills), whichever is lower; MemTotal for the machine; None where there is none.
    """

    name: str
    in_use: int
    line: int | None

    @property
    def fill(self) -> float:
        return self.in_use / self.line if self.line else 0.0


@dataclass(frozen=True)
class Usage:
    """The worker's memory now."""

    cgroup: str | None  # its cgroup v2 folder; None without cgroup v2 (then only the machine is seen)
    current: int | None  # memory.current
    limit: int | None  # memory.max; None: unlimited (the slice and the machine still bound it)
    high: int | None  # memory.high; None: unset
    peak: int | None  # memory.peak, or the highest memory.current read (peak_sampled)
    peak_sampled: bool
    levels: tuple[Level, ...]  # its own cgroup first, then each parent, then the machine
    pressure: Pressure | None  # its cgroup's memory.pressure, else the machine's; None without PSI
    high_events: int | None  # memory.events "high": how often the kernel throttled it
    gpu: GpuMemory | None = None

    @property
    def fill(self) -> float:
        """The fullest level: in use over its line (1.0 at the line)."""
        return max((level.fill for level in self.levels), default=0.0)

    @property
    def tightest(self) -> Level | None:
        lined = [level for level in self.levels if level.line]
        return max(lined, key=lambda level: level.fill) if lined else None

    @property
    def in_use(self) -> int | None:
        """The worker's own memory in use (the machine's, without a cgroup of its own)."""
        return self.levels[0].in_use if self.levels else None


if TYPE_CHECKING:  # collections.abc's generics cannot be subscripted at run time before Python 3.9
    Runner = Callable[[Sequence[str], float], tuple[int, str]]


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """(exit status, standard output); 127 when the program is missing, 124 when it did not finish in time."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            check=False,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        return 127, ""
    except subprocess.TimeoutExpired:
        return 124, ""
    return done.returncode, done.stdout if done.returncode == 0 else (done.stderr or done.stdout)


# The two /proc/meminfo lines a reading needs, found without parsing the fifty others.
_MEMINFO_FIELDS = re.compile(r"^(MemTotal|MemAvailable|MemFree):\s+(\d+) kB$", re.MULTILINE)


class Source(Protocol):
    """What the advisor reads its memory from: a Reader, or a test's script."""

    def read(self, gpu: bool = False) -> Usage: ...


class Reader:
    """Reads the worker's memory. Where it reads is injectable: tests point it at recorded samples.

    `proc` is /proc; `mount` and `path` name the cgroup (found from /proc/self when not given).
    """

    def __init__(
        self,
        proc: str = "/proc",
        mount: str | None = None,
        path: str | None = None,
        gpu: int | None = None,
        run: Runner = run_command,
    ) -> None:
        self.proc = proc
        self._location = (mount, path) if mount is not None and path is not None else None
        self._searched = self._location is not None
        self.gpu = gpu
        self.run = run
        self._highest = 0

    def _text(self, path: str) -> str | None:
        """A small kernel file's text (one read: these files are produced whole at each read)."""
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(descriptor, 16384).decode("ascii", "replace")
        except OSError:
            return None
        finally:
            os.close(descriptor)

    def location(self) -> tuple[str, str] | None:
        """(cgroup2 mount, this process's cgroup path), found once."""
        if not self._searched:
            self._searched = True
            own = self._text(os.path.join(self.proc, "self", "cgroup"))
            mounts = self._text(os.path.join(self.proc, "self", "mountinfo"))
            self._location = cgroup_v2_location(own or "", mounts or "")
        return self._location

    def folders(self) -> list[str]:
        """The worker's cgroup folder, then each parent's, up to (not including) the cgroup2 root."""
        found = self.location()
        if found is None:
            return []
        mount, path = found
        parts = [part for part in path.split("/") if part]
        return [os.path.join(mount, *parts[:end]) for end in range(len(parts), 0, -1)]

    def _value(self, folder: str, name: str) -> int | None:
        text = self._text(os.path.join(folder, name))
        return parse_cgroup_bytes(text) if text is not None else None

    def _level(self, folder: str) -> Level | None:
        current = self._value(folder, "memory.current")
        if current is None:  # the memory controller is not enabled here (or cgroup v1 holds it)
            return None
        stat = parse_keyed(self._text(os.path.join(folder, "memory.stat")) or "")
        lines = [value for value in (self._value(folder, "memory.high"), self._value(folder, "memory.max")) if value]
        in_use = max(0, current - stat.get("inactive_file", 0))
        return Level(name=folder, in_use=in_use, line=min(lines) if lines else None)

    def read(self, gpu: bool = False) -> Usage:
        """Read everything once (a dozen small files); nvidia-smi only when `gpu` is true."""
        folders = self.folders()
        own = folders[0] if folders else None
        levels = [level for level in (self._level(folder) for folder in folders) if level is not None]
        meminfo = self._text(os.path.join(self.proc, "meminfo"))
        info = {name: int(kib) * KIB for name, kib in _MEMINFO_FIELDS.findall(meminfo or "")}
        if "MemTotal" in info:  # MemAvailable since kernel 3.14; MemFree before
            total = info["MemTotal"]
            available = info.get("MemAvailable", info.get("MemFree", total))
            levels.append(Level(name="machine", in_use=max(0, total - available), line=total))
        current = limit = high = peak = events = None
        pressure_text = None
        if own is not None:
            current = self._value(own, "memory.current")
            limit = self._value(own, "memory.max")
            high = self._value(own, "memory.high")
            peak = self._value(own, "memory.peak")
            events_text = self._text(os.path.join(own, "memory.events"))
            events = parse_keyed(events_text).get("high") if events_text else None
            pressure_text = self._text(os.path.join(own, "memory.pressure"))
        if pressure_text is None:
            pressure_text = self._text(os.path.join(self.proc, "pressure", "memory"))
        self._highest = max(self._highest, current or 0)
        sampled = peak is None and current is not None
        return Usage(
            cgroup=own,
            current=current,
            limit=limit,
            high=high,
            peak=self._highest if sampled else peak,
            peak_sampled=sampled,
            levels=tuple(levels),
            pressure=parse_pressure(pressure_text) if pressure_text else None,
            high_events=events,
            gpu=self.gpu_memory() if gpu else None,
        )

    def gpu_memory(self) -> GpuMemory | None:
        """The worker's GPU (its TRAINGUARD_GPU, else GPU 0): memory total and used, or None without nvidia-smi."""
        index = self.gpu if self.gpu is not None else 0
        status, out = self.run(
            [
                "nvidia-smi",
                "--query-gpu=memory.total,memory.used",
                "--format=csv,noheader,nounits",
                f"--id={index}",
            ],
            NVIDIA_SMI_TIMEOUT_S,
        )
        if status != 0:
            return None
        try:
            gpus = parse_gpu_memory(out)
        except ReadingError:
            return None
        return gpus[0] if gpus else None


# --- The worker's budget (its environment) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What `trainguard launch` told this worker; None where it said nothing (not started by it)."""

    worker: int | None = None
    workers: int | None = None
    memory_max: int | None = None  # bytes, its unit's MemoryMax when it started (the canary's: the slice's)
    gpu: int | None = None  # its GPU's index
    gpu_memory_mib: int | None = None  # its share of that GPU's memory
    results_dir: str | None = None  # its own results folder, pushed to S3 with the rest
    checkpoints_dir: str | None = None  # its own checkpoints folder, on the data volume (snapshotted, not pushed)
    batch_size: int | None = None  # --batch-size, where the launch gave one


def _number(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    return int(text) if text.isdigit() else None


def budget(environ: Mapping[str, str] | None = None) -> Budget:
    """This worker's budget, from its environment."""
    environ = os.environ if environ is None else environ
    return Budget(
        worker=_number(environ, WORKER_VARIABLE),
        workers=_number(environ, WORKER_COUNT_VARIABLE),
        memory_max=_number(environ, MEMORY_MAX_VARIABLE),
        gpu=_number(environ, GPU_VARIABLE),
        gpu_memory_mib=_number(environ, GPU_MEMORY_VARIABLE),
        results_dir=environ.get(RESULTS_VARIABLE) or None,
        checkpoints_dir=environ.get(CHECKPOINTS_VARIABLE) or None,
        batch_size=_number(environ, BATCH_SIZE_VARIABLE),
    )


_default_reader: Reader | None = None


def usage(gpu: bool = False) -> Usage:
    """The worker's memory now (its cgroup, its parents, the machine; GPU memory too when `gpu` is true)."""
    global _default_reader  # noqa: PLW0603 (one reader per process keeps the sampled peak)
    if _default_reader is None:
        _default_reader = Reader(gpu=budget().gpu)
    return _default_reader.read(gpu=gpu)


# --- The pressure level, with hysteresis (pure) -----------------------------------------------------------------

OK, HIGH, CRITICAL = "ok", "high", "critical"


@dataclass(frozen=True)
class Thresholds:
    """Where each level begins, and where it ends: lower than it began, so the level does not flap.

    fill is in use over the line (memory.high or memory.max) at the fullest level; some and full are PSI avg10
    percentages. At 92 % of memory.max a step's growth can reach the kill; at 80 % there is room to shrink.
    """

    high_fill: float = 0.80
    high_fill_end: float = 0.70
    critical_fill: float = 0.92
    critical_fill_end: float = 0.85
    high_some: float = 20.0
    high_some_end: float = 10.0
    critical_full: float = 20.0
    critical_full_end: float = 10.0


THRESHOLDS = Thresholds()


def pressure_level(
    previous: str, fill: float, pressure: Pressure | None, throttled: bool, thresholds: Thresholds = THRESHOLDS
) -> str:
    """ok, high or critical now, given the level before (pure).

    Critical: past critical_fill, PSI full past critical_full, or the kernel throttled the cgroup since the last
    reading (over memory.high). A level ends only below its *_end thresholds.
    """
    t = thresholds
    some = pressure.some_avg10 if pressure else 0.0
    full = pressure.full_avg10 if pressure else 0.0
    if throttled or fill >= t.critical_fill or full >= t.critical_full:
        return CRITICAL
    if previous == CRITICAL and (fill >= t.critical_fill_end or full >= t.critical_full_end):
        return CRITICAL
    if fill >= t.high_fill or some >= t.high_some:
        return HIGH
    if previous in (HIGH, CRITICAL) and (fill >= t.high_fill_end or some >= t.high_some_end):
        return HIGH
    return OK


# --- The batch-size advisor -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One change of batch size: when (seconds since the advisor began), from, to, and why."""

    at_s: float
    before: int
    after: int
    level: str
    why: str


@dataclass
class _Memory:
    """What the advisor learnt about the worker's memory: fixed (before the first batch) and per sample."""

    baseline: int | None = None
    peak_in_use: int = 0
    batch_at_peak: int = 0

    def per_sample(self) -> int | None:
        if self.baseline is None or not self.batch_at_peak or self.peak_in_use <= self.baseline:
            return None
        return (self.peak_in_use - self.baseline) // self.batch_at_peak


class BatchAdvisor:
    """A batch size that shrinks before the kernel throttles and kills, and grows back slowly.

    Call batch_size() every step: it reads memory at most every `interval_s` (else it only compares two clock
    readings) and answers the batch size for the next step:
    - critical (past 92 % of the line, or throttled): half, at once, and again after `critical_settle_s` and one
      step at the new size if it is still critical;
    - high (past 80 %, or PSI some past 20 %): three quarters, after `high_settle_s` (PSI is a 10 s average);
    - ok for `grow_after_s`: an eighth more (at least 1), never back to a size that was too big within
      `forget_after_s`, nor past what its measured memory per sample says would reach 70 % of the line.
    Create it after the model is loaded: what is in use at its first reading counts as fixed, what comes after
    as growing with the batch. With a results folder (the launcher gives each worker one) it keeps its report
    there, trainguard-batch.json (its sizes, changes and memory figures), which `trainguard launch` reads for
    the canary and the push carries to S3.
    """

    def __init__(
        self,
        initial: int | None = None,
        *,
        minimum: int = 1,
        maximum: int | None = None,
        interval_s: float = 1.0,
        grow_after_s: float = 60.0,
        critical_settle_s: float = 2.0,
        high_settle_s: float = 10.0,
        forget_after_s: float = 600.0,
        thresholds: Thresholds = THRESHOLDS,
        reader: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        report_dir: str | None = None,
        log: Callable[[str], object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        given = budget(environ)
        start = initial if initial is not None else given.batch_size
        if start is None or start < 1:
            raise ValueError(
                "BatchAdvisor needs a batch size of 1 or more (or TRAINGUARD_BATCH_SIZE from the launcher)"
            )
        if not 1 <= minimum <= start:
            raise ValueError(f"minimum {minimum} must be between 1 and the batch size {start}")
        seconds = {
            "interval_s": interval_s,
            "grow_after_s": grow_after_s,
            "critical_settle_s": critical_settle_s,
            "high_settle_s": high_settle_s,
            "forget_after_s": forget_after_s,
        }
        for name, value in seconds.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more, not {value!r}")
        self.minimum, self.maximum = minimum, max(maximum or start, start)
        self.interval_s, self.grow_after_s, self.forget_after_s = interval_s, grow_after_s, forget_after_s
        self.critical_settle_s, self.high_settle_s = critical_settle_s, high_settle_s
        self.thresholds = thresholds
        self.reader: Source = reader or Reader(gpu=given.gpu)
        self.clock = clock
        self.report_dir = report_dir if report_dir is not None else given.results_dir
        self.log: Callable[[str], object] = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.worker = given.worker
        self.batch = start
        self.level = OK
        self.changes: list[Change] = []
        self.memory = _Memory()
        self.usage: Usage | None = None
        self._began = clock()
        self._read_at = -math.inf
        self._steps = 0
        self._changed_at = self._began
        self._changed_step = 0
        self._ok_since = self._began
        self._too_big: tuple[int, float] | None = None  # (batch size, when it proved too big)
        self._high_events: int | None = None
        self._reported_at = -math.inf
        self._warned = False

    @property
    def batch_sizes(self) -> list[int]:
        """Every size it gave, in order: the first, then one per change."""
        return [self.changes[0].before if self.changes else self.batch] + [change.after for change in self.changes]

    def batch_size(self) -> int:
        """The batch size for the next step (call it once per step)."""
        self._steps += 1
        now = self.clock()
        if now - self._read_at >= self.interval_s:
            self._read_at = now
            try:
                reading = self.reader.read()
            except (OSError, ReadingError) as error:  # a file in another format: keep the size, say so once
                self._say_once(f"cannot read memory ({error}); keeping batch size {self.batch}")
                return self.batch
            self.observe(reading, now)
        return self.batch

    def out_of_memory(self) -> int:
        """Tell it a step failed for memory (a CUDA out-of-memory error you caught): half, at once."""
        self.level = CRITICAL
        self._ok_since = math.inf
        self._change(max(self.minimum, self.batch // 2), self.clock(), "the step ran out of memory")
        return self.batch

    def observe(self, reading: Usage, now: float) -> Change | None:
        """Decide from one reading (batch_size() does, once per interval); the change made, if any."""
        self.usage = reading
        self._learn(reading)
        throttled = (
            reading.high_events is not None
            and self._high_events is not None
            and reading.high_events > self._high_events
        )
        self._high_events = reading.high_events
        previous = self.level
        self.level = pressure_level(previous, reading.fill, reading.pressure, throttled, self.thresholds)
        if self.level != OK:
            self._ok_since = math.inf
        elif previous != OK:
            self._ok_since = now
        change = self._decide(reading, now, throttled)
        if change is None and now - self._reported_at >= REPORT_EVERY_S:
            self._report()
        return change

    def _learn(self, reading: Usage) -> None:
        in_use = reading.in_use
        if in_use is None:
            return
        if self.memory.baseline is None:
            self.memory.baseline = in_use
        if in_use > self.memory.peak_in_use:
            self.memory.peak_in_use, self.memory.batch_at_peak = in_use, self.batch

    def _settled(self, now: float, seconds: float) -> bool:
        """The last change has had its time, and a step at its size, to show in memory."""
        return now - self._changed_at >= seconds and self._steps - self._changed_step >= 1

    def _decide(self, reading: Usage, now: float, throttled: bool) -> Change | None:
        fill = f"{reading.fill:.0%} of its memory line"
        if self.level == CRITICAL and self._settled(now, self.critical_settle_s):
            why = "throttled by the kernel (memory.high)" if throttled else f"critical: {fill}"
            return self._change(max(self.minimum, self.batch // 2), now, why)
        if self.level == HIGH and self._settled(now, self.high_settle_s):
            some = f", PSI some {reading.pressure.some_avg10:.0f}%" if reading.pressure else ""
            smaller = max(self.minimum, min(self.batch - 1, self.batch * 3 // 4))
            return self._change(smaller, now, f"high: {fill}{some}")
        calm = now - max(self._ok_since, self._changed_at)
        if self.level == OK and calm >= self.grow_after_s:
            return self._grow(reading, now, calm)
        return None

    def _grow(self, reading: Usage, now: float, calm: float) -> Change | None:
        target = min(self.maximum, self.batch + max(1, self.batch // 8))
        if self._too_big is not None:
            size, when = self._too_big
            if now - when < self.forget_after_s:
                target = min(target, size - 1)
            else:
                self._too_big = None
        per_sample, tightest = self.memory.per_sample(), reading.tightest
        if per_sample and tightest is not None and tightest.line:
            room = int(self.thresholds.high_fill_end * tightest.line) - tightest.in_use
            target = min(target, self.batch + max(0, room // per_sample))
        if target <= self.batch:
            return None
        return self._change(target, now, f"ok for {calm:.0f} s")

    def _change(self, size: int, now: float, why: str) -> Change | None:
        if size == self.batch:
            return None
        if size < self.batch:
            self._too_big = (self.batch, now)
        change = Change(round(now - self._began, 3), self.batch, size, self.level, why)
        self.changes.append(change)
        self.batch = size
        self._changed_at, self._changed_step = now, self._steps
        self.log(f"trainguard_worker: batch size {change.before} -> {change.after} ({why})")
        self._report()
        return change

    def _say_once(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            self.log(f"trainguard_worker: {text}")

    def report(self) -> dict[str, object]:
        """What it keeps in trainguard-batch.json."""
        return {
            "version": 1,
            "worker": self.worker,
            "batch_size": self.batch,
            "batch_sizes": self.batch_sizes,
            "level": self.level,
            "changes": [asdict(change) for change in self.changes[-MAX_REPORTED_CHANGES:]],
            "baseline_bytes": self.memory.baseline,
            "peak_in_use_bytes": self.memory.peak_in_use or None,
            "batch_at_peak": self.memory.batch_at_peak or None,
            "per_sample_bytes": self.memory.per_sample(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _report(self) -> None:
        self._reported_at = self.clock()
        if not self.report_dir:
            return
        try:
            write_atomically(
                os.path.join(self.report_dir, BATCH_REPORT_NAME), (json.dumps(self.report()) + "\n").encode()
            )
        except OSError as error:  # a full disk must not stop training
            self._say_once(f"cannot write {BATCH_REPORT_NAME} in {self.report_dir}: {error.strerror or error}")


# --- Checkpoints and the push -------------------------------------------------------------------------------------


def temporary_name(path: str) -> str:
    """Where a file is written before it is renamed into place: beside it, hidden, ending in .tmp (which the push
    skips), with this process's id (two writers never share one)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _new_temporary(path: str, mode: int) -> tuple[str, int]:
    """The temporary file for `path`, made new and opened for writing: never an existing file, nor through a link
    someone put in its place."""
    temporary = temporary_name(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by an earlier process with this pid
    return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def write_atomically(path: str, content: bytes, mode: int = 0o644) -> None:
    """`path` holds `content` whole, or keeps what it held: a new temporary file, fsync, rename, fsync the folder."""

    def write(descriptor: int) -> None:
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]

    _replace(path, write, mode)


def _replace(path: str, write: Callable[[int], object], mode: int = 0o644) -> None:
    """Write `path` through a temporary file: `write(descriptor)` fills it, then fsync, rename, fsync the folder."""
    temporary, descriptor = _new_temporary(path, mode)
    try:
        try:
            write(descriptor)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(os.path.dirname(path))
    _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: str) -> None:
    """Temporary files of this path left by writers that were killed (their process is gone)."""
    folder, name = os.path.split(path)
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder or "."):
            match = pattern.match(entry)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


@dataclass(frozen=True)
class PushResult:
    ok: bool
    message: str


def checkpoint(
    path: str,
    write: Callable[[str], object],
    *,
    push_now: bool = True,
    wait: bool = True,
    timeout_s: float = PUSH_TIMEOUT_S,
) -> PushResult | None:
    """Write a checkpoint whole or not at all, then push the results now.

    `write(temporary_path)` writes the file (torch.save(state, temporary_path), say); then it is fsynced and
    renamed over `path`, and the folder fsynced: a kill at any moment leaves the previous checkpoint or the new
    one, never part of one. If `write` raises, the temporary file goes and the error propagates. Then, unless
    `push_now` is false, push(wait=wait): it returns how it went, and a failed push is no error here (the
    5-minute timer pushes again); with wait=False training goes on once the guard has the request.
    Checkpoints under the results folder reach S3; those in the checkpoints folder stay on the data volume,
    whose snapshots keep them.
    """

    def fill(descriptor: int) -> None:
        temporary = temporary_name(path)
        write(temporary)  # the caller's writer opens the (new, empty) temporary file by its name
        written = os.open(temporary, os.O_RDONLY)  # what is there now, even if the writer replaced the file
        try:
            os.fsync(written)
        finally:
            os.close(written)

    _replace(path, fill)
    return push(wait=wait, timeout_s=timeout_s) if push_now else None


def push(
    *,
    wait: bool = True,
    timeout_s: float = PUSH_TIMEOUT_S,
    request_dir: str | None = None,
    command: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    run: Runner = run_command,
) -> PushResult:
    """Push the results to S3 now (the seed's "push results every epoch").

    On a trainguard instance the guard does it: this writes a request in its folder and waits for the answer,
    so the push (the AWS CLI, about 50 MiB) runs outside the worker's memory limit and cannot get the worker
    killed. Where no guard takes requests, it runs `trainguard-push --now` itself. `wait=False` returns once
    the request is made.
    """
    request_dir = request_dir or PUSH_REQUEST_DIR
    command = command or PUSH_COMMAND
    if os.path.isdir(request_dir) and os.access(request_dir, os.W_OK | os.X_OK):
        return _ask_the_guard(request_dir, wait, timeout_s, clock, sleep)
    status, out = run([command, "--now"], timeout_s)
    said = (out.strip().splitlines() or [f"exit status {status}"])[-1]
    if status == 127:
        said = f"{command} is not installed here"
    return PushResult(status == 0, said)


def _ask_the_guard(
    request_dir: str, wait: bool, timeout_s: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> PushResult:
    name = f"push-{os.getpid()}-{time.monotonic_ns()}"
    request = os.path.join(request_dir, name + ".request")
    try:
        os.close(os.open(request, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as error:
        return PushResult(False, f"could not ask the guard to push ({error.strerror or error})")
    if not wait:
        return PushResult(True, "the guard will push")
    answer = os.path.join(request_dir, name + ".done")
    deadline = clock() + timeout_s
    while clock() < deadline:
        try:
            with open(answer) as handle:
                status, _, message = handle.read().strip().partition(" ")
        except OSError:
            sleep(REQUEST_POLL_S)
            continue
        return PushResult(status == "0", message or f"exit status {status}")
    return PushResult(False, f"the guard did not answer within {timeout_s:g} s (is trainguard-guard running?)")
