"""Size trainguard-training.slice from this machine's RAM and keep memory for the system (run at setup, as root).

    python3 -m healthcheck.guard.setup [--root /] [--meminfo /proc/meminfo]

Writes two systemd drop-ins (atomically) and prints the arithmetic:
- trainguard-training.slice.d/50-memory.conf: MemoryMax = RAM - max(1 GiB, 8 % of RAM), MemoryHigh a little below;
- system.slice.d/50-trainguard.conf: MemoryMin, what sshd, the push and the agents need (below).
Then `systemctl daemon-reload` applies them (the apply script runs it). Exit status: 0 written, 1 a drop-in
could not be written (a read-only or full disk), 3 /proc/meminfo unreadable or too little RAM.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from healthcheck.guard import fit, readings, units
from healthcheck.guard.host import Host
from healthcheck.guard.trainguard_worker import write_atomically

MIB = fit.MIB
# Measured on Debian 12's OpenSSH 9.2 (this project's development machine, November 2026, VmRSS from ps):
# the sshd listener 9.1 MiB; one logged-in session's sshd 9.9 MiB (a non-root login has two such processes).
SSHD_LISTENER_BYTES = 10 * MIB
SSHD_SESSION_BYTES = 2 * 10 * MIB
SSH_SESSIONS_KEPT = 2  # enough for a person to log in and look while training runs
# The push runs AWS CLI v1 (aws s3 sync); its peak RSS measured with /usr/bin/time -f %M on awscli 1.45:
# 46 MiB (s3 sync --help) to 55 MiB (cloudwatch put-metric-data); doubled for a sync of many files.
PUSH_BYTES = 2 * 56 * MIB
# The agents are measured on the instance itself at setup (their units' MemoryCurrent), doubled for growth;
# until a unit reports (not started yet), this floor stands in for it. Not measured here: no agent packages
# exist for Debian; confirm with `systemctl show -p MemoryCurrent` on an instance.
AGENT_UNITS = ("amazon-cloudwatch-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service")
AGENT_FLOOR_BYTES = 64 * MIB
AGENT_GROWTH = 2


def system_memory_min(agent_current: Sequence[int | None]) -> tuple[int, list[str]]:
    """system.slice's MemoryMin and its arithmetic (pure)."""
    agents = [max(AGENT_FLOOR_BYTES, AGENT_GROWTH * (current or 0)) for current in agent_current]
    sshd = SSHD_LISTENER_BYTES + SSH_SESSIONS_KEPT * SSHD_SESSION_BYTES
    total = math.ceil((sshd + PUSH_BYTES + sum(agents)) / MIB) * MIB
    lines = [
        f"sshd: listener {fit.human(SSHD_LISTENER_BYTES)} + {SSH_SESSIONS_KEPT} sessions x"
        f" {fit.human(SSHD_SESSION_BYTES)} = {fit.human(sshd)}",
        f"push (AWS CLI v1): {fit.human(PUSH_BYTES)}",
        *(
            f"{unit}: {fit.human(size)}"
            + (" (floor: not running yet)" if not current else f" (2 x {fit.human(current)})")
            for unit, size, current in zip(AGENT_UNITS, agents, agent_current, strict=True)
        ),
        f"system.slice MemoryMin = {fit.human(total)} ({total} bytes)",
    ]
    return total, lines


def slice_drop_in(limits: fit.SliceLimits) -> str:
    return (
        "# Written by trainguard-setup-slice from /proc/meminfo: RAM - max(1 GiB, 8 % of RAM).\n"
        f"[Slice]\nMemoryMax={limits.memory_max}\nMemoryHigh={limits.memory_high}\n"
    )


def system_drop_in(memory_min: int) -> str:
    return (
        "# Written by trainguard-setup-slice: what sshd, the results push and the agents need (measured).\n"
        f"[Slice]\nMemoryMin={memory_min}\n"
    )


def write_drop_in(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(str(path), text.encode(), 0o644)
    os.chmod(path, 0o644)  # whatever the umask: systemd and people read it


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainguard-setup-slice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="write under this root (tests)")
    parser.add_argument("--meminfo", type=Path, default=Path("/proc/meminfo"))
    args = parser.parse_args(argv)
    host = host or Host()
    try:
        mem_total = readings.parse_meminfo(args.meminfo.read_text())["MemTotal"]
        limits = fit.slice_limits(mem_total)
    except (OSError, ValueError) as error:
        print(f"trainguard-setup-slice: {error}", file=sys.stderr)
        return 3
    agents = []
    for unit in AGENT_UNITS:
        value = host.unit_properties(unit, ["MemoryCurrent"]).get("MemoryCurrent", "")
        agents.append(int(value) if value.isdigit() else None)  # "[not set]" or unknown unit
    memory_min, min_lines = system_memory_min(agents)
    units_dir = args.root / "etc" / "systemd" / "system"
    for path, text in (
        (units_dir / f"{units.SLICE}.d" / "50-memory.conf", slice_drop_in(limits)),
        (units_dir / "system.slice.d" / "50-trainguard.conf", system_drop_in(memory_min)),
    ):
        try:
            write_drop_in(path, text)
        except OSError as error:  # a read-only root, a full disk: the slice keeps its earlier limits, if any
            print(f"trainguard-setup-slice: cannot write {path}: {error.strerror or error}", file=sys.stderr)
            return 1
    for line in [*limits.lines(mem_total), *min_lines]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
