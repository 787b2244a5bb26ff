"""Parsers for what the kernel, systemd and nvidia-smi print (pure).

Formats:
- /proc/pressure/memory: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line
  (kernel Documentation/accounting/psi.rst).
- /proc/meminfo: "MemTotal:       24684096 kB" (proc(5)).
- cgroup v2 memory.current, memory.peak (kernel 5.19+): one number of bytes; memory.max: bytes or "max"
  (kernel Documentation/admin-guide/cgroup-v2.rst).
- nvidia-smi --query-compute-apps=pid,used_memory and --query-gpu=memory.total,memory.used with
  --format=csv,noheader,nounits: one comma-separated line per process / per GPU, MiB without units,
  "[N/A]" or "[Not Supported]" where the driver has no value (nvidia-smi(1), "CSV" output and the
  --query-* options; https://man.archlinux.org/man/extra/nvidia-utils/nvidia-smi.1.en).
- systemctl show -p A,B: "A=value" lines (systemctl(1)).
"""

from __future__ import annotations

# The kernel's and nvidia-smi's formats that a worker reads too: one parser each, in the worker library.
from healthcheck.guard.trainguard_worker import (
    GpuMemory,
    Pressure,
    ReadingError,
    parse_cgroup_bytes,
    parse_gpu_memory,
    parse_meminfo,
    parse_mib,
    parse_pressure,
)

__all__ = [
    "GpuMemory",
    "Pressure",
    "ReadingError",
    "parse_cgroup_bytes",
    "parse_compute_apps",
    "parse_gpu_memory",
    "parse_meminfo",
    "parse_pressure",
    "parse_properties",
    "parse_unit_list",
]


def parse_compute_apps(text: str) -> dict[int, int]:
    """nvidia-smi --query-compute-apps=pid,used_memory: MiB per pid (summed over GPUs)."""
    used: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        pid_field, _, memory_field = line.partition(",")
        if not pid_field.strip().isdigit():
            raise ReadingError(f"not a compute-apps line: {line[:80]!r}")
        pid, mib = int(pid_field), parse_mib(memory_field)
        used[pid] = used.get(pid, 0) + (mib or 0)
    return used


def parse_properties(text: str) -> dict[str, str]:
    """systemctl show -p ...: {property: value}."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_unit_list(text: str) -> list[str]:
    """systemctl list-units --plain --no-legend: the unit names (first column)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]
