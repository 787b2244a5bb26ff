"""What the worker library costs a training step.

A training loop calls `BatchAdvisor.batch_size()` every step. Between readings
(one a second by default) a call only compares two clock readings; a reading
opens a dozen small kernel files. Measured here:

- a call between readings;
- a reading of the recorded cgroup v2 files of a training worker (the VM
  drill's, under tests/) and a reading of this machine's own files (what it
  has: /proc/meminfo and memory pressure; the memory controller may be on
  cgroup v1);
- what that adds to a step of 10 ms, 100 ms and 1 s when the advisor reads
  once a second.

Each figure is the median of ROUNDS rounds. Nothing is written.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from healthcheck.guard import trainguard_worker as tg

TREE = Path(__file__).resolve().parents[1] / "tests" / "healthcheck" / "guard" / "samples" / "cgroup-v2-worker"
WORKER_PATH = "/trainguard.slice/trainguard-training.slice/trainguard-worker-2.service"
ROUNDS = 5


def per_call(action: Callable[[], object], calls: int) -> float:
    """Median seconds per call over ROUNDS rounds of `calls` calls."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            action()
        rounds.append((time.perf_counter() - started) / calls)
    return statistics.median(rounds)


def recorded_reader() -> tg.Reader:
    return tg.Reader(proc=str(TREE / "proc"), mount=str(TREE / "sys-fs-cgroup"), path=WORKER_PATH)


def main() -> int:
    advisor = tg.BatchAdvisor(16, reader=recorded_reader(), environ={}, report_dir="", log=lambda line: None)
    advisor.batch_size()  # the first call reads; the ones timed below fall between readings
    between = per_call(advisor.batch_size, 200_000)
    recorded = per_call(recorded_reader().read, 2_000)
    own = per_call(tg.Reader().read, 2_000)

    print(f"Python {sys.version.split()[0]}, median of {ROUNDS} rounds")
    print(f"a call between readings:                 {between * 1e9:8.0f} ns")
    print(f"a reading, recorded cgroup v2 worker:     {recorded * 1e6:8.1f} µs")
    print(f"a reading, this machine's own files:      {own * 1e6:8.1f} µs")
    for step_s in (0.01, 0.1, 1.0):
        calls_per_reading = max(1.0, 1.0 / step_s)
        added = between + recorded / calls_per_reading
        print(f"added to a step of {step_s * 1000:6.0f} ms, one reading a second: {added / step_s * 100:.4f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
