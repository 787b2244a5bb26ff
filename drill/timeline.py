"""The drill's figures, from what the host observed (pure functions, tested directly).

Times are seconds since the VM started. A banner sample says whether sshd sent
its identification and how long that took; a kernel sample says whether a
closed guest port answered with a reset (behind qemu's user network a TCP
connect always succeeds, so only that reset proves the guest kernel is alive).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SCENARIOS = ("unguarded", "guarded", "recovery", "degrade")
SUMMARY_KEYS = (
    "scenario",
    "freeze_seconds",
    "time_to_hung_s",
    "worst_banner_latency_s",
    "workers_started",
    "workers_finished",
    "workers_killed",
    "detect_s",
    "reboot_call_s",
    "recover_s",
    "results_intact",
    "batch_sizes",
)
# The drill names its workers' processes so (comm, at most 15 characters), and
# the kernel's "Killed process" lines name them.
WORKER_PREFIX = "drill-worker-"

BANNER_OK = "OK"


@dataclass(frozen=True)
class Sample:
    """One 1 Hz sample: the guest kernel's reset and sshd's banner, probed one after the other."""

    at_s: float
    kernel_alive: bool
    banner: str  # BANNER_OK, or the probe verdict that its failure means (HUNG, REFUSED, ...)
    banner_s: float  # time to the banner, or time waited for it in vain

    @property
    def silent(self) -> bool:
        """The incident's signature: the guest kernel answers, sshd does not."""
        return self.kernel_alive and self.banner != BANNER_OK


@dataclass(frozen=True)
class ProbeRun:
    """One run of `trainguard probe --no-login`."""

    started_s: float
    finished_s: float
    verdict: str


@dataclass(frozen=True)
class Kill:
    """A process the guest kernel's OOM killer shot, from the serial console."""

    at_s: float | None  # guest kernel time, close to seconds since the VM started
    pid: int
    name: str
    in_cgroup: bool  # a cgroup's limit (the training slice), not the whole machine

    @property
    def worker(self) -> bool:
        return self.name.startswith(WORKER_PREFIX)


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    open_at_end: bool  # still frozen when the drill stopped watching

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


_KILL = re.compile(
    r"^(?:\[\s*(?P<time>\d+\.\d+)\]\s+)?(?P<cgroup>Memory cgroup out of memory: )?"
    r"(?:Out of memory: )?Killed process (?P<pid>\d+) \((?P<name>[^)]*)\)",
    re.MULTILINE,
)


def parse_kills(console: str) -> list[Kill]:
    """Every "Killed process" line of the kernel's serial console, in order."""
    return [
        Kill(
            at_s=float(match["time"]) if match["time"] else None,
            pid=int(match["pid"]),
            name=match["name"],
            in_cgroup=match["cgroup"] is not None,
        )
        for match in _KILL.finditer(console)
    ]


def first_banner_s(samples: Sequence[Sample]) -> float | None:
    """When sshd first answered (the end of boot)."""
    for sample in samples:
        if sample.banner == BANNER_OK:
            return sample.at_s + sample.banner_s
    return None


def freeze_windows(samples: Sequence[Sample]) -> list[Window]:
    """Runs of samples in which the guest kernel answered and sshd did not, once sshd had answered.

    A window runs from its first silent sample's start to the start of the
    sample that ended it, or, when it lasts to the end, to the end of the
    last sample's wait.
    """
    windows: list[Window] = []
    seen_banner = False
    start: float | None = None
    for sample in samples:
        if not seen_banner:
            seen_banner = sample.banner == BANNER_OK
            continue
        if sample.silent:
            start = sample.at_s if start is None else start
        elif start is not None:
            windows.append(Window(start, sample.at_s, open_at_end=False))
            start = None
    if start is not None and samples:
        last = samples[-1]
        windows.append(Window(start, last.at_s + last.banner_s, open_at_end=True))
    return windows


def longest_silence(samples: Sequence[Sample], after_s: float = 0.0) -> tuple[Window, float] | None:
    """The longest run of samples with no banner, whatever the kernel check said, and the share of them in
    which the guest kernel answered (a thrashing guest under emulation can miss the check's deadline too,
    which splits the strict freeze windows)."""
    best: tuple[Window, float] | None = None
    run: list[Sample] = []
    for sample in [*samples, None]:
        if sample is not None and sample.at_s >= after_s and sample.banner != BANNER_OK:
            run.append(sample)
            continue
        if run:
            end = sample.at_s if sample is not None else run[-1].at_s + run[-1].banner_s
            window = Window(run[0].at_s, end, open_at_end=sample is None)
            if best is None or window.seconds > best[0].seconds:
                best = (window, sum(s.kernel_alive for s in run) / len(run))
        run = []
    return best


def freeze_seconds(samples: Sequence[Sample], after_s: float = 0.0) -> float | None:
    """The longest freeze window that began at or after `after_s` (the pressure's start, not a slow boot).

    None when sshd never answered (nothing to freeze).
    """
    if first_banner_s(samples) is None:
        return None
    windows = [window.seconds for window in freeze_windows(samples) if window.start_s >= after_s]
    return round(max(windows, default=0.0), 1)


def worst_banner_latency_s(samples: Sequence[Sample], after_s: float = 0.0) -> float | None:
    """The slowest banner that did come, among samples started at or after `after_s`."""
    latencies = [s.banner_s for s in samples if s.banner == BANNER_OK and s.at_s >= after_s]
    return round(max(latencies), 2) if latencies else None


def time_to_hung_s(runs: Sequence[ProbeRun], since_s: float) -> float | None:
    """Seconds from `since_s` (the pressure's start) until the probe first said HUNG."""
    for run in sorted(runs, key=lambda run: run.finished_s):
        if run.verdict == "HUNG" and run.finished_s >= since_s:
            return round(run.finished_s - since_s, 1)
    return None


def summary(
    scenario: str,
    *,
    freeze: float | None = None,
    hung: float | None = None,
    worst_banner: float | None = None,
    workers_started: int | None = None,
    workers_finished: int | None = None,
    workers_killed: int | None = None,
    detect: float | None = None,
    reboot_call: float | None = None,
    recover: float | None = None,
    results_intact: bool | None = None,
    batch_sizes: dict[str, list[int]] | None = None,
) -> dict[str, object]:
    """One scenario's object in drill-results/summary.json; None (null) where a figure does not apply.

    batch_sizes: each worker's sizes in the order it used them, by worker index (a string, as JSON keys are).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    values = (
        scenario,
        freeze,
        hung,
        worst_banner,
        workers_started,
        workers_finished,
        workers_killed,
        detect,
        reboot_call,
        recover,
        results_intact,
        batch_sizes,
    )
    return dict(zip(SUMMARY_KEYS, values, strict=True))


def render_table(rows: Sequence[dict[str, object]]) -> str:
    """The summary table printed at the end of `make drill`."""
    widths = [max([len(key), *(len(_cell(row[key])) for row in rows)]) for key in SUMMARY_KEYS]
    lines = ["  ".join(key.ljust(width) for key, width in zip(SUMMARY_KEYS, widths, strict=True))]
    lines += [
        "  ".join(_cell(row[key]).ljust(width) for key, width in zip(SUMMARY_KEYS, widths, strict=True)) for row in rows
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):  # batch sizes by worker: "16>12>8, 16>12" in worker order
        return ", ".join(">".join(map(str, sizes)) for _, sizes in sorted(value.items(), key=lambda item: int(item[0])))
    return str(value)


def render_timeline(events: Sequence[tuple[float, str]]) -> str:
    """Readable timeline lines, `  +123.4s  what happened`, in time order."""
    return "\n".join(f"  {at:+8.1f}s  {text}" for at, text in sorted(events, key=lambda event: event[0]))
