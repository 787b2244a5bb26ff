"""The exec stage's one command, the parsing of its output, and the vital thresholds.

Everything here is pure: the script is text, the parser takes text, and the
thresholds are compared without I/O. The script reads /proc and runs df and,
where it exists, nvidia-smi, so it costs the host two or three processes.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any

Vitals = dict[str, Any]

NVIDIA_SMI_QUERY = "index,name,memory.used,memory.total,utilization.gpu"


def vitals_script(data_mount: str, gpu_query_seconds: int) -> str:
    """A POSIX sh script, fed to `sh -s` on stdin so the login shell's syntax never matters.

    nvidia-smi hangs when a GPU is wedged, so it runs under `timeout` with a
    limit shorter than the exec stage: a stuck GPU shows as gpu_error, not as a
    frozen host.
    """
    mount = shlex.quote(data_mount)
    return f"""\
echo @loadavg; cat /proc/loadavg
echo @cpus; getconf _NPROCESSORS_ONLN 2>/dev/null || nproc
echo @meminfo; cat /proc/meminfo
echo @uptime; cat /proc/uptime
echo @df; df -Pk / {mount} 2>/dev/null
if command -v nvidia-smi >/dev/null 2>&1; then
  echo @gpu
  limit=""
  command -v timeout >/dev/null 2>&1 && limit="timeout -k 1 {gpu_query_seconds}"
  $limit nvidia-smi --query-gpu={NVIDIA_SMI_QUERY} --format=csv,noheader,nounits 2>&1 \\
    || echo "@gpu-error exit status $?"
fi
"""


def parse_vitals(output: str) -> Vitals:
    """Vitals from the script's output; a section that is missing or garbled is left out."""
    sections = _split_sections(output)
    vitals: Vitals = {}
    parsers = {
        "loadavg": _parse_loadavg,
        "cpus": _parse_cpus,
        "meminfo": _parse_meminfo,
        "uptime": _parse_uptime,
        "df": _parse_df,
        "gpu": _parse_gpu,
    }
    for name, lines in sections.items():
        parser = parsers.get(name)
        if parser is None:
            continue
        try:
            section = parser(lines)
        except (ValueError, IndexError, ZeroDivisionError):
            continue
        # "nan" and "inf" parse as floats; JSON has no such numbers, and a
        # threshold compared with NaN is never breached: the vital is null, ignored.
        vitals.update({key: value if _all_finite(value) else None for key, value in section.items()})
    if isinstance(vitals.get("load_1m"), float) and vitals.get("cpus"):
        vitals["load_per_cpu"] = round(vitals["load_1m"] / vitals["cpus"], 2)
    return vitals


@dataclass(frozen=True)
class Thresholds:
    """Past any of these a host is DEGRADED (Nagios WARNING)."""

    mem_available_min_percent: float = 10.0
    disk_used_max_percent: float = 90.0
    load_per_cpu_max: float = 2.0
    gpu_memory_max_percent: float = 95.0


# What to do about each kind of vital past its threshold: memory is how the incident began; load alone is not.
ADVICE = {
    "memory": "Memory is running out, which is how the incident's freeze began: stop or shrink a job now, while "
    "you can log in (trainguard launch --status on the instance shows each worker's memory; the stack runs "
    "without swap on purpose), and push the results (trainguard-push).",
    "disk": "Free space on that disk: delete old checkpoints or move data to S3 (what is in /data/results is "
    "pushed already), or grow the volume.",
    "load": "The CPUs are overloaded (too many jobs or data-loader workers); memory is fine, so this is slowness, "
    "not the incident: fewer data-loader workers, or fewer jobs at once.",
    "gpu": "A GPU's memory is nearly full: a larger batch there will fail with out-of-memory; shrink it.",
}


@dataclass(frozen=True)
class Breach:
    """One vital past its threshold: its kind (a key of ADVICE) and a short phrase."""

    kind: str
    text: str


def breaches(vitals: Vitals, thresholds: Thresholds) -> tuple[Breach, ...]:
    """Every vital past its threshold, in a stable order."""
    found: list[Breach] = []
    mem = vitals.get("mem_available_percent")
    if mem is not None and mem < thresholds.mem_available_min_percent:
        found.append(Breach("memory", f"memory available {mem:.1f}% < {thresholds.mem_available_min_percent:g}%"))
    for mount, disk in (vitals.get("disks") or {}).items():
        if disk["used_percent"] > thresholds.disk_used_max_percent:
            found.append(
                Breach("disk", f"disk {mount} {disk['used_percent']:.1f}% > {thresholds.disk_used_max_percent:g}%")
            )
    load = vitals.get("load_per_cpu")
    if load is not None and load > thresholds.load_per_cpu_max:
        found.append(Breach("load", f"load per CPU {load:.2f} > {thresholds.load_per_cpu_max:g}"))
    for gpu in vitals.get("gpus") or []:
        used = gpu.get("memory_used_percent")
        if used is not None and used > thresholds.gpu_memory_max_percent:
            found.append(
                Breach("gpu", f"GPU {gpu['index']} memory {used:.1f}% > {thresholds.gpu_memory_max_percent:g}%")
            )
    return tuple(found)


def advice(found: tuple[Breach, ...]) -> str:
    """What to do about the vitals past their thresholds, the most urgent first (memory before the rest)."""
    kinds = sorted({breach.kind for breach in found}, key=list(ADVICE).index)
    return " ".join(ADVICE[kind] for kind in kinds)


def describe(vitals: Vitals) -> str:
    """A one-line digest for the summary column."""
    parts = []
    if vitals.get("load_per_cpu") is not None:
        parts.append(f"load/cpu {vitals['load_per_cpu']:.2f}")
    if vitals.get("mem_available_percent") is not None:
        parts.append(f"mem avail {vitals['mem_available_percent']:.0f}%")
    for mount, disk in (vitals.get("disks") or {}).items():
        parts.append(f"disk {mount} {disk['used_percent']:.0f}%")
    for gpu in vitals.get("gpus") or []:
        if gpu.get("memory_used_percent") is not None:
            parts.append(f"gpu{gpu['index']} mem {gpu['memory_used_percent']:.0f}%")
    if "gpu_error" in vitals:
        parts.append("gpu query failed")
    return ", ".join(parts) if parts else "no vitals in the command's output"


def _split_sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@") and " " not in line:
            current = sections.setdefault(line[1:], [])
        elif line.startswith("@gpu-error"):
            sections.setdefault("gpu", []).append(line)
        elif current is not None:
            current.append(line)
    return sections


def _parse_loadavg(lines: list[str]) -> Vitals:
    load_1m, load_5m, load_15m = (float(field) for field in lines[0].split()[:3])
    return {"load_1m": load_1m, "load_5m": load_5m, "load_15m": load_15m}


def _parse_cpus(lines: list[str]) -> Vitals:
    return {"cpus": int(lines[0])}


def _parse_meminfo(lines: list[str]) -> Vitals:
    kib = {}
    for line in lines:
        key, _, value = line.partition(":")
        kib[key] = int(value.split()[0])
    total, available = kib["MemTotal"], kib["MemAvailable"]
    return {
        "mem_total_mib": total // 1024,
        "mem_available_mib": available // 1024,
        "mem_available_percent": round(100.0 * available / total, 1),
        "swap_total_mib": kib.get("SwapTotal", 0) // 1024,
        "swap_used_mib": (kib.get("SwapTotal", 0) - kib.get("SwapFree", 0)) // 1024,
    }


def _parse_uptime(lines: list[str]) -> Vitals:
    return {"uptime_s": float(lines[0].split()[0])}


def _parse_df(lines: list[str]) -> Vitals:
    disks = {}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        used, available, mount = int(fields[2]), int(fields[3]), fields[5]
        # df names the filesystem holding each path: when the data path is not
        # a mount of its own, its line repeats / and is skipped.
        if mount in disks:
            continue
        usable = used + available
        disks[mount] = {
            "used_percent": round(100.0 * used / usable, 1) if usable else 0.0,
            "size_gib": round(int(fields[1]) / 1024**2, 1),
        }
    return {"disks": disks}


def _parse_gpu(lines: list[str]) -> Vitals:
    gpus = []
    for line in lines:
        if line.startswith("@gpu-error"):
            return {"gpu_error": line.removeprefix("@gpu-error ").strip()}
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5:
            return {"gpu_error": line.strip()[:200]}
        index, name, used, total, utilisation = fields
        used_mib, total_mib = _number(used), _number(total)
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_used_mib": used_mib,
                "memory_total_mib": total_mib,
                "memory_used_percent": (
                    round(100.0 * used_mib / total_mib, 1) if used_mib is not None and total_mib else None
                ),
                "utilization_percent": _number(utilisation),
            }
        )
    return {"gpus": gpus}


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_all_finite(item) for item in value)
    return True


def _number(field: str) -> float | None:
    """nvidia-smi prints [N/A] or [Not Supported] where a value is unavailable (MIG, some vGPUs)."""
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
