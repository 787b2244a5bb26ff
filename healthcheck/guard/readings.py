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

from dataclasses import dataclass

KIB = 1024


class ReadingError(ValueError):
    """A file or command printed something that is not in the documented format."""


@dataclass(frozen=True)
class Pressure:
    """Memory pressure stall information: percent of the last 10 s some / all tasks stalled on memory."""

    some_avg10: float
    full_avg10: float


def parse_pressure(text: str) -> Pressure:
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        lines[kind] = dict(field.split("=", 1) for field in rest.split() if "=" in field)
    try:
        return Pressure(some_avg10=float(lines["some"]["avg10"]), full_avg10=float(lines["full"]["avg10"]))
    except (KeyError, ValueError):
        raise ReadingError(f"not a pressure file (no some/full avg10): {text[:80]!r}") from None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field."""
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
    """memory.current / memory.peak / memory.max: bytes, or None for "max" (no limit)."""
    value = text.strip()
    if value == "max":
        return None
    if not value.isdigit():
        raise ReadingError(f"not a cgroup memory value: {value[:40]!r}")
    return int(value)


def _mib_or_none(field: str) -> int | None:
    field = field.strip()
    return int(field) if field.isdigit() else None  # "[N/A]", "[Not Supported]"


def parse_compute_apps(text: str) -> dict[int, int]:
    """nvidia-smi --query-compute-apps=pid,used_memory: MiB per pid (summed over GPUs)."""
    used: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        pid_field, _, memory_field = line.partition(",")
        if not pid_field.strip().isdigit():
            raise ReadingError(f"not a compute-apps line: {line[:80]!r}")
        pid, mib = int(pid_field), _mib_or_none(memory_field)
        used[pid] = used.get(pid, 0) + (mib or 0)
    return used


@dataclass(frozen=True)
class GpuMemory:
    total_mib: int
    used_mib: int


def parse_gpu_memory(text: str) -> list[GpuMemory]:
    """nvidia-smi --query-gpu=memory.total,memory.used: one entry per GPU."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [_mib_or_none(field) for field in line.split(",")]
        if len(fields) != 2 or fields[0] is None:
            raise ReadingError(f"not a memory.total,memory.used line: {line[:80]!r}")
        gpus.append(GpuMemory(total_mib=fields[0], used_mib=fields[1] or 0))
    return gpus


def parse_properties(text: str) -> dict[str, str]:
    """systemctl show -p ...: {property: value}."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_unit_list(text: str) -> list[str]:
    """systemctl list-units --plain --no-legend: the unit names (first column)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]
