"""The launcher's and the slice's arithmetic (pure): slice size, how many workers fit, when to start the next.

Every function returns the lines of arithmetic it used, so what the launcher
prints is what it decided with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from healthcheck.guard.readings import GpuMemory, Pressure

GIB = 1024**3
PAGE = 4096  # memory limits are kept page-aligned, as the kernel rounds them
MIB = 1024**2

# The slice keeps max(1 GiB, 8 % of RAM) out of training's reach (in the VM drill, with RAM minus a
# reserve for training, sshd answered within 1.6 s).
RESERVE_MIN_BYTES = 1 * GIB
RESERVE_FRACTION = 0.08
# MemoryHigh starts reclaim (throttling) inside the slice before MemoryMax kills: 2 % of RAM, at least 256 MiB below.
HIGH_GAP_FRACTION = 0.02
HIGH_GAP_MIN_BYTES = 256 * MIB
# Before each start: pressure above these means the host is already stalling on memory, so wait.
PSI_SOME_MAX = 10.0
PSI_FULL_MAX = 1.0


def human(size: float) -> str:
    """Bytes as GiB (or MiB below 1 GiB), two decimals: what the arithmetic prints."""
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


@dataclass(frozen=True)
class SliceLimits:
    memory_max: int
    memory_high: int
    reserve: int

    def lines(self, mem_total: int) -> list[str]:
        return [
            f"RAM {human(mem_total)}; reserve max(1 GiB, 8% of RAM) = {human(self.reserve)}",
            f"MemoryMax = RAM - reserve = {human(self.memory_max)} ({self.memory_max} bytes)",
            f"MemoryHigh = MemoryMax - max(256 MiB, 2% of RAM) = {human(self.memory_high)} ({self.memory_high} bytes)",
        ]


def slice_limits(mem_total: int) -> SliceLimits:
    """trainguard-training.slice's memory limits from the RAM size (MemTotal, bytes), page-aligned."""
    reserve = max(RESERVE_MIN_BYTES, math.ceil(mem_total * RESERVE_FRACTION))
    memory_max = (mem_total - reserve) // PAGE * PAGE
    gap = max(HIGH_GAP_MIN_BYTES, math.ceil(mem_total * HIGH_GAP_FRACTION))
    memory_high = (memory_max - gap) // PAGE * PAGE
    if memory_high <= 0:
        raise ValueError(f"{human(mem_total)} of RAM leaves nothing for training after a {human(reserve)} reserve")
    return SliceLimits(memory_max=memory_max, memory_high=memory_high, reserve=reserve)


@dataclass(frozen=True)
class Fit:
    """How many workers fit, each worker's MemoryMax, and the arithmetic as printed lines."""

    workers: int
    worker_memory_max: int
    worker_gpu_mib: int
    limited_by: str
    arithmetic: tuple[str, ...]


def fit_workers(
    *,
    canary_peak: int,
    canary_gpu_mib: int,
    headroom: float,
    slice_memory_max: int,
    gpus: Sequence[GpuMemory],
) -> Fit:
    """Workers that fit: memory from the canary's peak x (1 + headroom) in the slice, GPU memory likewise per GPU.

    Each GPU holds whole workers only (a worker's GPU memory is on one GPU), so
    GPUs count separately. A canary that used no GPU memory is not limited by it.
    """
    if headroom < 0:
        raise ValueError("headroom must be 0 or more")
    factor = 1 + headroom
    need = min(math.ceil(max(math.ceil(canary_peak * factor), MIB) / PAGE) * PAGE, slice_memory_max)
    by_memory = slice_memory_max // need
    lines = [
        f"memory: canary peak {human(canary_peak)} x (1 + {headroom:g}) = {human(need)} per worker"
        + (" (bounded by the slice)" if need == slice_memory_max else ""),
        f"        slice MemoryMax {human(slice_memory_max)} / {human(need)} = {by_memory} worker(s)",
    ]
    gpu_need = math.ceil(canary_gpu_mib * factor)
    by_gpu: int | None = None
    if gpu_need and gpus:
        per_gpu = [gpu.total_mib // gpu_need for gpu in gpus]
        by_gpu = sum(per_gpu)
        lines.append(f"GPU:    canary {canary_gpu_mib} MiB x (1 + {headroom:g}) = {gpu_need} MiB per worker")
        lines.extend(
            f"        GPU {index}: {gpu.total_mib} MiB / {gpu_need} MiB = {count} worker(s)"
            for index, (gpu, count) in enumerate(zip(gpus, per_gpu, strict=True))
        )
    elif gpus:
        lines.append("GPU:    the canary used no GPU memory; GPU memory does not limit")
    else:
        lines.append("GPU:    none found (no nvidia-smi); GPU memory does not limit")
    if by_gpu is not None and by_gpu < by_memory:
        workers, limited_by = by_gpu, "GPU memory"
    else:
        workers, limited_by = by_memory, "the slice's memory"
    lines.append(
        f"fit:    {workers} worker(s), limited by {limited_by}"
        + (f" (min({by_memory}, {by_gpu}))" if by_gpu is not None else "")
    )
    return Fit(workers, need, gpu_need, limited_by, tuple(lines))


@dataclass(frozen=True)
class StartDecision:
    start: bool
    reason: str


def may_start_next(
    *,
    running_workers: int,
    worker_memory_max: int,
    slice_current: int,
    slice_memory_max: int,
    mem_available: int,
    pressure: Pressure,
) -> StartDecision:
    """Whether one more worker may start now, or the launcher must wait (and why).

    Running workers may not have reached their peak yet, so the slice is
    counted as committed to at least each running worker's MemoryMax.
    """
    committed = max(slice_current, running_workers * worker_memory_max)
    if committed + worker_memory_max > slice_memory_max:
        return StartDecision(
            False,
            f"slice committed {human(committed)} + {human(worker_memory_max)} for the next worker"
            f" > MemoryMax {human(slice_memory_max)}",
        )
    if mem_available < worker_memory_max:
        return StartDecision(
            False, f"MemAvailable {human(mem_available)} < {human(worker_memory_max)} for the next worker"
        )
    if pressure.some_avg10 > PSI_SOME_MAX or pressure.full_avg10 > PSI_FULL_MAX:
        return StartDecision(
            False,
            f"memory pressure some {pressure.some_avg10:.1f}% / full {pressure.full_avg10:.1f}% (avg10)"
            f" above {PSI_SOME_MAX:g}% / {PSI_FULL_MAX:g}%",
        )
    return StartDecision(
        True,
        f"room: slice committed {human(committed)} + {human(worker_memory_max)} <= {human(slice_memory_max)},"
        f" MemAvailable {human(mem_available)}, pressure some {pressure.some_avg10:.1f}% full"
        f" {pressure.full_avg10:.1f}%",
    )


@dataclass(frozen=True)
class BatchFit:
    """The largest batch per worker that fits (exact, or only an upper bound), and the arithmetic as lines."""

    batch: int
    exact: bool
    arithmetic: tuple[str, ...]


def _per_sample(size: float) -> str:
    return f"{size / MIB:.2f} MiB" if size < 10 * MIB else human(size)


def safe_batch(
    *,
    canary_peak: int,
    canary_batch: int,
    baseline: int | None,
    slice_memory_max: int,
    workers: int,
    headroom: float,
) -> BatchFit:
    """The largest batch per worker with which `workers` workers fit in the slice, headroom included (pure).

    A worker's memory is fixed + batch x per sample. The canary's `baseline` (its memory before its first batch,
    from the worker library's report) is the fixed part. Without it the answer is only an upper bound: counting
    the whole peak per sample gives the most batch that could fit, and any fixed part (the model, the optimizer)
    makes it smaller.
    """
    per_worker = slice_memory_max / workers / (1 + headroom)
    exact = baseline is not None and 0 <= baseline < canary_peak
    fixed = baseline if exact and baseline is not None else 0
    per_sample = max(1, math.ceil((canary_peak - fixed) / canary_batch))
    batch = max(0, math.floor((per_worker - fixed) / per_sample))
    lines = [
        f"batch:  per worker: slice MemoryMax {human(slice_memory_max)} / {workers} worker(s) / (1 + {headroom:g})"
        f" = {human(per_worker)}",
    ]
    if exact:
        verdict = "fits" if canary_batch <= batch else "does not fit"
        lines += [
            f"        canary at batch {canary_batch}: peak {human(canary_peak)} = {human(fixed)} fixed (in use before"
            f" its first batch) + {canary_batch} x {_per_sample(per_sample)} per sample",
            f"        largest batch per worker: ({human(per_worker)} - {human(fixed)}) / {_per_sample(per_sample)}"
            f" = {batch} ({batch} x {workers} = {batch * workers} in all); {canary_batch} per worker"
            f" ({canary_batch * workers} in all) {verdict}",
        ]
    else:
        lines += [
            f"        canary at batch {canary_batch}: peak {human(canary_peak)}, its fixed part unknown (no"
            " trainguard-batch.json: the script does not use trainguard_worker)",
            f"        largest batch per worker: at most {human(per_worker)} / ({human(canary_peak)} / {canary_batch})"
            f" = {batch}, fewer by its fixed memory (the model, the optimizer)",
        ]
    return BatchFit(batch, exact, tuple(lines))
