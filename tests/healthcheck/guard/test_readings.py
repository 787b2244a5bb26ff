"""The parsers against recorded samples (samples/README.md says where each comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthcheck.guard import readings

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_pressure_parses_the_kernels_some_and_full_lines() -> None:
    assert readings.parse_pressure(sample("proc-pressure-memory.idle.txt")) == readings.Pressure(0.0, 0.0)
    assert readings.parse_pressure(sample("proc-pressure-cpu.busy.txt")).some_avg10 > 0


def test_pressure_that_is_not_psi_is_refused() -> None:
    with pytest.raises(readings.ReadingError):
        readings.parse_pressure("some avg60=1.00\n")


def test_meminfo_is_read_in_bytes() -> None:
    meminfo = readings.parse_meminfo(sample("proc-meminfo.debian12-24g.txt"))

    assert meminfo["MemTotal"] == 24684096 * 1024
    assert 0 < meminfo["MemAvailable"] <= meminfo["MemTotal"]
    assert "HugePages_Total" in meminfo  # a count, no kB: kept as is


def test_cgroup_memory_files() -> None:
    assert readings.parse_cgroup_bytes(sample("cgroup-memory.current")) == 3328573440
    assert readings.parse_cgroup_bytes(sample("cgroup-memory.peak")) == 4194304000
    assert readings.parse_cgroup_bytes(sample("cgroup-memory.max")) == 15227715584
    assert readings.parse_cgroup_bytes(sample("cgroup-memory.max.unlimited")) is None
    with pytest.raises(readings.ReadingError):
        readings.parse_cgroup_bytes("12 kB")


def test_compute_apps_by_pid_with_a_value_the_driver_does_not_have() -> None:
    assert readings.parse_compute_apps(sample("nvidia-smi-compute-apps.csv")) == {4121: 5120, 4188: 5098, 4290: 0}
    assert readings.parse_compute_apps("") == {}
    with pytest.raises(readings.ReadingError):
        readings.parse_compute_apps("No devices were found\n")


def test_gpu_memory_one_entry_per_gpu() -> None:
    assert readings.parse_gpu_memory(sample("nvidia-smi-gpu-memory.csv")) == [readings.GpuMemory(23028, 10455)]
    assert len(readings.parse_gpu_memory(sample("nvidia-smi-gpu-memory-4gpu.csv"))) == 4
    with pytest.raises(readings.ReadingError):
        readings.parse_gpu_memory("[N/A], 3\n")


def test_systemctl_show_and_list_units() -> None:
    assert readings.parse_properties("ActiveState=failed\nResult=oom-kill\nExecMainStatus=9\n") == {
        "ActiveState": "failed",
        "Result": "oom-kill",
        "ExecMainStatus": "9",
    }
    listing = (
        "trainguard-worker-0.service loaded active running trainguard training worker 0\n"
        "trainguard-worker-1.service loaded failed failed  trainguard training worker 1\n"
    )
    assert readings.parse_unit_list(listing) == ["trainguard-worker-0.service", "trainguard-worker-1.service"]
