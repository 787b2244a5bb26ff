"""100 loopback targets, 50 healthy and 50 frozen sshd, probed at once with --timeout 5.

Checks that every target is classified correctly, prints the probe's wall time
(budget 7.5 s, goal 6 s) and, in the same run, the wall time of 100 parallel
OpenSSH `ssh -o BatchMode=yes -o ConnectTimeout=5 ... true` against the same
servers, and the ratio. Everything runs on 127.0.0.1.

The 100 "hosts" share this machine's cores, so two things that belong to the
hosts, not to the probe, are set aside: their load average (the benchmark's
own) is not held against them (--load-per-cpu-max 1000), and bash's ~/.bashrc
is skipped in their sessions (the sandbox's default). A second pass keeps
~/.bashrc, as a real host would, and reports what that costs both clients.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from healthcheck.probe.sandbox import MAX_PORTS, ThrowawaySshd, generate_key

TARGETS_PER_KIND = 50
TIMEOUT = 5
BUDGET_S, GOAL_S = 7.5, 6.0


def start_servers(count: int, key: Path, workdir: Path, kind: str, skip_shell_rc: bool) -> list[ThrowawaySshd]:
    servers = []
    while remaining := count - sum(len(sshd.ports) for sshd in servers):
        directory = workdir / f"{kind}-{len(servers)}"
        directory.mkdir()
        sshd = ThrowawaySshd(ports=min(MAX_PORTS, remaining), workdir=directory, skip_shell_rc=skip_shell_rc)
        sshd.authorize(key)
        servers.append(sshd.start())
    return servers


def run_probe(targets: list[str], key: Path, known_hosts: Path) -> tuple[float, int, list[dict[str, object]]]:
    command = [sys.executable, "-m", "healthcheck", "probe", "--json", "--timeout", str(TIMEOUT)]
    command += ["--load-per-cpu-max", "1000", "-i", str(key), "--known-hosts", str(known_hosts), *targets]
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    return time.monotonic() - started, completed.returncode, json.loads(completed.stdout)["results"]


def run_openssh(targets: list[str], key: Path, known_hosts: Path) -> tuple[float, int]:
    options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", f"UserKnownHostsFile={known_hosts}"]
    options += ["-o", "StrictHostKeyChecking=yes", "-i", str(key)]
    started = time.monotonic()
    clients = [
        subprocess.Popen(
            ["ssh", *options, "-p", target.rsplit(":", 1)[1], target.rsplit(":", 1)[0], "true"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for target in targets
    ]
    logged_in = sum(client.wait() == 0 for client in clients)
    return time.monotonic() - started, logged_in


def one_pass(skip_shell_rc: bool) -> bool:
    with tempfile.TemporaryDirectory(prefix="trainguard-bench-") as tmp:
        workdir = Path(tmp)
        key = generate_key(workdir / "id_bench")
        healthy = start_servers(TARGETS_PER_KIND, key, workdir, "healthy", skip_shell_rc)
        frozen = start_servers(TARGETS_PER_KIND, key, workdir, "frozen", skip_shell_rc)
        try:
            known_hosts = workdir / "known_hosts"
            known_hosts.write_text("".join(f"{s.known_hosts_line(p)}\n" for s in healthy + frozen for p in s.ports))
            for sshd in frozen:
                sshd.freeze()
            user = healthy[0].user
            expected = {f"{user}@127.0.0.1:{p}": "HEALTHY" for s in healthy for p in s.ports}
            expected |= {f"{user}@127.0.0.1:{p}": "HUNG" for s in frozen for p in s.ports}
            probe_s, status, results = run_probe(list(expected), key, known_hosts)
            ssh_s, logged_in = run_openssh(list(expected), key, known_hosts)
        finally:
            for sshd in healthy + frozen:
                sshd.close()

    wrong = Counter(
        f"{expected[r['target']]} as {r['verdict']}" for r in results if r["verdict"] != expected[r["target"]]
    )
    healthy_s = sorted(float(r["duration_s"]) for r in results if expected[r["target"]] == "HEALTHY")  # type: ignore[arg-type]
    correct = len(expected) - sum(wrong.values())
    print(f"hosts' ~/.bashrc: {'skipped' if skip_shell_rc else 'run, as on a real host'}")
    print(f"  classified correctly: {correct}/{len(expected)}" + (f"  (wrong: {dict(wrong)})" if wrong else ""))
    print(f"  probe exit status: {status} (2, CRITICAL, expected)")
    print(f"  healthy targets: median {healthy_s[len(healthy_s) // 2]:.2f}s, slowest {healthy_s[-1]:.2f}s")
    print(f"  healthcheck wall time: {probe_s:.2f}s (budget {BUDGET_S}s, goal {GOAL_S}s)")
    print(f"  OpenSSH wall time:     {ssh_s:.2f}s ({logged_in}/{len(expected)} logged in)")
    print(f"  ratio healthcheck/OpenSSH: {probe_s / ssh_s:.2f}")
    return not wrong and probe_s <= BUDGET_S


def main() -> int:
    kinds = f"{TARGETS_PER_KIND} healthy, {TARGETS_PER_KIND} frozen"
    print(f"{2 * TARGETS_PER_KIND} loopback targets ({kinds}), --timeout {TIMEOUT}")
    passed = one_pass(skip_shell_rc=True)
    one_pass(skip_shell_rc=False)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
