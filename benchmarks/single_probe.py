"""One healthy loopback probe, interpreter start included: `python -m healthcheck probe ...` (budget 0.6 s).

Runs the command 15 times against one throwaway sshd and prints min, median and
max wall time, and where the time goes in a single run (python -X importtime's
heaviest imports, and the stages).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from healthcheck.probe.sandbox import ThrowawaySshd

RUNS = 15
BUDGET_S = 0.6


def main() -> int:
    with ThrowawaySshd(ports=1) as sshd:
        key = sshd.add_client_key("id_bench")
        known_hosts = sshd.workdir / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line(sshd.ports[0]) + "\n")
        # The load average is this machine's (a previous benchmark's), not the host's to answer for.
        command = [sys.executable, "-m", "healthcheck", "probe", "--json", "--load-per-cpu-max", "1000", "-i", str(key)]
        command += ["--known-hosts", str(known_hosts), f"{sshd.user}@127.0.0.1:{sshd.ports[0]}"]
        walls = []
        for _ in range(RUNS):
            started = time.monotonic()
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            walls.append(time.monotonic() - started)
        result = json.loads(completed.stdout)["results"][0]
        imports = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import healthcheck.cli, healthcheck.probe.session"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr

    cumulative = sorted(
        ((int(line.split("|")[1]), line.split("|")[2].strip()) for line in imports.splitlines()[1:] if "|" in line),
        reverse=True,
    )
    median = statistics.median(walls)
    print(f"single healthy probe, interpreter start included ({RUNS} runs): verdict {result['verdict']}")
    print(f"  wall time: min {min(walls):.3f}s, median {median:.3f}s, max {max(walls):.3f}s (budget {BUDGET_S}s)")
    print("  stages of the last run: " + ", ".join(f"{s['name']} {s['seconds']:.3f}s" for s in result["stages"]))
    print("  heaviest imports (cumulative): " + ", ".join(f"{name} {us / 1e6:.3f}s" for us, name in cumulative[:4]))
    return 0 if result["verdict"] == "HEALTHY" and median <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
