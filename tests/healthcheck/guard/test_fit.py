"""The arithmetic: the slice's size, how many workers fit, and when the next may start."""

from __future__ import annotations

import pytest

from healthcheck.guard import fit
from healthcheck.guard.readings import GpuMemory, Pressure

GIB = fit.GIB
A10G = GpuMemory(total_mib=23028, used_mib=0)


def test_slice_reserves_one_gib_on_small_machines_and_eight_percent_on_large_ones() -> None:
    small = fit.slice_limits(8 * GIB)
    large = fit.slice_limits(192 * GIB)

    assert small.reserve == GIB
    assert small.memory_max == 7 * GIB
    assert large.reserve == pytest.approx(0.08 * 192 * GIB, abs=4096)
    assert large.memory_max == (192 * GIB - large.reserve) // 4096 * 4096
    for limits in (small, large):
        assert limits.memory_max % 4096 == 0
        assert limits.memory_high % 4096 == 0
        assert 0 < limits.memory_max - limits.memory_high <= max(256 * fit.MIB, 0.02 * 192 * GIB) + 4096


def test_a_machine_too_small_for_the_reserve_is_refused() -> None:
    with pytest.raises(ValueError, match="leaves nothing"):
        fit.slice_limits(GIB)


def test_the_worked_example_in_the_readme() -> None:
    """g5.xlarge: 16 GiB RAM, one A10G; canary peak 3.9 GiB and 5120 MiB of GPU memory, headroom 0.2."""
    limits = fit.slice_limits(16 * GIB)
    result = fit.fit_workers(
        canary_peak=4194304000, canary_gpu_mib=5120, headroom=0.2, slice_memory_max=limits.memory_max, gpus=[A10G]
    )

    assert result.workers == 3
    assert result.worker_gpu_mib == 6144
    assert result.worker_memory_max == 5033164800  # 4194304000 x 1.2, a whole number of pages
    assert result.arithmetic == (
        "memory: canary peak 3.91 GiB x (1 + 0.2) = 4.69 GiB per worker",
        "        slice MemoryMax 14.72 GiB / 4.69 GiB = 3 worker(s)",
        "GPU:    canary 5120 MiB x (1 + 0.2) = 6144 MiB per worker",
        "        GPU 0: 23028 MiB / 6144 MiB = 3 worker(s)",
        "fit:    3 worker(s), limited by the slice's memory (min(3, 3))",
    )


def test_gpu_memory_limits_when_it_is_scarcer_and_each_gpu_holds_whole_workers() -> None:
    result = fit.fit_workers(
        canary_peak=GIB, canary_gpu_mib=10000, headroom=0.2, slice_memory_max=100 * GIB, gpus=[A10G, A10G]
    )

    assert result.workers == 2  # 23028 // 12000 = 1 per GPU, although 2 x 23028 // 12000 would say 3
    assert result.limited_by == "GPU memory"


def test_without_gpu_use_only_memory_counts_and_a_huge_canary_is_bounded_by_the_slice() -> None:
    no_gpu = fit.fit_workers(canary_peak=GIB, canary_gpu_mib=0, headroom=0.0, slice_memory_max=4 * GIB, gpus=[])
    huge = fit.fit_workers(canary_peak=9 * GIB, canary_gpu_mib=0, headroom=0.5, slice_memory_max=8 * GIB, gpus=[A10G])

    assert (no_gpu.workers, no_gpu.worker_memory_max) == (4, GIB)
    assert "GPU memory does not limit" in no_gpu.arithmetic[2]
    assert (huge.workers, huge.worker_memory_max) == (1, 8 * GIB)
    assert "bounded by the slice" in huge.arithmetic[0]


CALM = Pressure(0.0, 0.0)


@pytest.mark.parametrize(
    ("running", "slice_current", "available", "pressure", "start", "why"),
    [
        (1, 2 * GIB, 10 * GIB, CALM, True, "room"),
        # The canary has used little so far, but will reach its peak: its MemoryMax counts.
        (3, 1 * GIB, 10 * GIB, CALM, False, "slice committed 12.00 GiB + 4.00 GiB"),
        (1, 14 * GIB, 10 * GIB, CALM, False, "> MemoryMax 15.00 GiB"),
        (1, 2 * GIB, 3 * GIB, CALM, False, "MemAvailable 3.00 GiB < 4.00 GiB"),
        (1, 2 * GIB, 10 * GIB, Pressure(25.0, 0.0), False, "memory pressure some 25.0%"),
        (1, 2 * GIB, 10 * GIB, Pressure(5.0, 3.0), False, "full 3.0%"),
    ],
)
def test_next_start_waits_for_memory_and_pressure(
    running: int, slice_current: int, available: int, pressure: Pressure, start: bool, why: str
) -> None:
    decision = fit.may_start_next(
        running_workers=running,
        worker_memory_max=4 * GIB,
        slice_current=slice_current,
        slice_memory_max=15 * GIB,
        mem_available=available,
        pressure=pressure,
    )

    assert decision.start is start
    assert why in decision.reason
